//! Writing complete configuration files (and their secret files) for tests.

use std::path::{Path, PathBuf};

/// A complete configuration on disk: `config.toml` plus secret files beside it.
pub struct ConfigFiles {
    pub path: PathBuf,
}

/// Values a test usually wants to choose; everything else gets a working default.
pub struct ConfigSettings {
    pub salesforce_login_url: String,
    pub salesforce_auth: String,
    pub ondorse_base_url: String,
    pub webhooks_listen: String,
    pub admin_listen: String,
    pub store_path: PathBuf,
    pub mappings_dir: PathBuf,
    /// Extra TOML lines appended to the file (tests of odd inputs).
    pub extra: String,
    /// Extra TOML lines in the `[admin]` section.
    pub admin_extra: String,
}

impl ConfigSettings {
    pub fn in_dir(dir: &Path) -> ConfigSettings {
        ConfigSettings {
            salesforce_login_url: "https://login.salesforce.com".to_owned(),
            salesforce_auth: "jwt_bearer".to_owned(),
            ondorse_base_url: "https://api.ondorse.example".to_owned(),
            webhooks_listen: "127.0.0.1:0".to_owned(),
            admin_listen: "127.0.0.1:0".to_owned(),
            store_path: dir.join("store"),
            mappings_dir: dir.join("mappings"),
            extra: String::new(),
            admin_extra: String::new(),
        }
    }
}

/// The secrets every test configuration uses.
pub const PATH_SECRET: &str = "0123456789abcdef0123456789abcdef";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const ONDORSE_API_KEY: &str = "ondorse-test-key";

/// Writes `config.toml` and the secret files it names into `dir`.
pub fn write_config(dir: &Path, settings: &ConfigSettings, private_key_pem: &str) -> ConfigFiles {
    std::fs::create_dir_all(dir).expect("create config dir");
    let secrets = [
        ("sf-jwt-key.pem", private_key_pem),
        ("sf-client-secret", "sandbox-client-secret\n"),
        ("sf-refresh-token", "sandbox-refresh-token\n"),
        ("ondorse-api-key", ONDORSE_API_KEY),
        ("webhook-path-secret", PATH_SECRET),
        ("admin-token", ADMIN_TOKEN),
    ];
    for (name, content) in secrets {
        std::fs::write(dir.join(name), content).expect("write secret file");
    }
    let text = format!(
        r#"[salesforce]
login_url = "{login_url}"
auth = "{auth}"
client_id = "sandbox-client-id"
username = "integration@example.com"
private_key_file = "sf-jwt-key.pem"
client_secret_file = "sf-client-secret"
refresh_token_file = "sf-refresh-token"

[ondorse]
base_url = "{ondorse}"
api_key_file = "ondorse-api-key"

[webhooks]
listen = "{webhooks_listen}"
path_secret_file = "webhook-path-secret"

[admin]
listen = "{admin_listen}"
token_file = "admin-token"
{admin_extra}
[store]
path = "{store}"

[mappings]
dir = "{mappings}"
{extra}
"#,
        login_url = settings.salesforce_login_url,
        auth = settings.salesforce_auth,
        ondorse = settings.ondorse_base_url,
        webhooks_listen = settings.webhooks_listen,
        admin_listen = settings.admin_listen,
        store = settings.store_path.display(),
        mappings = settings.mappings_dir.display(),
        extra = settings.extra,
        admin_extra = settings.admin_extra,
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config.toml");
    ConfigFiles { path }
}
