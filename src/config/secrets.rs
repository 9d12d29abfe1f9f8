//! Secrets: `*_file` keys name files whose content is read into a
//! [`SecretString`] at once and never printed.

use std::path::Path;

use secrecy::SecretString;

use super::CREDENTIALS_DIRECTORY_ENV;
use super::load::Loader;

impl Loader {
    /// Reads the secret named by a `*_file` key, if the key is present.
    pub(super) fn secret_file(&mut self, section: &str, key: &str) -> Option<SecretString> {
        self.secret_file_checked(section, key, |_| Ok(()))
    }

    /// [`Loader::secret_file`], with `check` saying whether the content is
    /// usable (a key that parses): what `run` would refuse, `check` refuses.
    fn secret_file_checked(
        &mut self,
        section: &str,
        key: &str,
        check: fn(&SecretString) -> Result<(), String>,
    ) -> Option<SecretString> {
        let name = self.string(section, key)?;
        if name.trim().is_empty() {
            return None;
        }
        let path = self.secrets_base.join(&name);
        let where_from = if Path::new(&name).is_absolute() {
            String::new()
        } else if self.credentials_directory {
            format!(" (relative names are read from ${CREDENTIALS_DIRECTORY_ENV})")
        } else {
            " (relative names are read next to the configuration file)".to_owned()
        };
        match std::fs::read_to_string(&path) {
            Ok(mut secret) => {
                if secret.ends_with('\n') {
                    secret.pop();
                    if secret.ends_with('\r') {
                        secret.pop();
                    }
                }
                if secret.is_empty() {
                    self.problem(
                        section,
                        key,
                        format!("the secret file {} is empty", path.display()),
                    );
                    return None;
                }
                let secret = SecretString::from(secret);
                if let Err(reason) = check(&secret) {
                    self.problem(
                        section,
                        key,
                        format!("the secret file {} {reason}", path.display()),
                    );
                    return None;
                }
                Some(secret)
            }
            Err(error) => {
                self.problem(
                    section,
                    key,
                    format!(
                        "cannot read the secret file {}{where_from}: {error}",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn required_secret_file(
        &mut self,
        section: &str,
        key: &str,
        why: &str,
    ) -> Option<SecretString> {
        self.required_secret_file_checked(section, key, why, |_| Ok(()))
    }

    pub(super) fn required_secret_file_checked(
        &mut self,
        section: &str,
        key: &str,
        why: &str,
        check: fn(&SecretString) -> Result<(), String>,
    ) -> Option<SecretString> {
        let present = self
            .sections
            .get(section)
            .is_some_and(|table| table.contains_key(key));
        let secret = self.secret_file_checked(section, key, check);
        if !present {
            self.missing(section, key, why);
        }
        secret
    }
}
