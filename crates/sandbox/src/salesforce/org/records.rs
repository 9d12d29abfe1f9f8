//! What the handle does to the org as a data load or a user would: inserts,
//! edits, deletes, undeletes and merges of Accounts, and views of them.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Org, touch};
use crate::salesforce::data::{self, ACCOUNT_PREFIX, Row};

impl Org {
    /// Stores Accounts as a data load would; see `SalesforceSandbox::insert_accounts`.
    pub(crate) fn insert_accounts(&mut self, accounts: Vec<Map<String, Value>>) -> Vec<String> {
        let mut ids = Vec::with_capacity(accounts.len());
        for fields in accounts {
            let id = match fields.get("Id").or_else(|| fields.get("id")) {
                Some(Value::String(given)) => data::normalize_id(given)
                    .unwrap_or_else(|| panic!("insert_accounts: malformed Account Id {given:?}")),
                Some(other) => panic!("insert_accounts: Id must be a string, got {other}"),
                None => self.next_account_id(),
            };
            let now = data::now_stamp();
            let mut row: Row = self
                .account_schema
                .fields()
                .iter()
                .map(|field| (field.name.clone(), Value::Null))
                .collect();
            row.insert("Id".into(), json!(id));
            row.insert("IsDeleted".into(), json!(false));
            row.insert("OwnerId".into(), json!(self.integration_user_id));
            for stamp in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
                row.insert(stamp.into(), json!(now));
            }
            let stamped = fields
                .keys()
                .any(|name| name.eq_ignore_ascii_case("SystemModstamp"));
            self.apply_fields(&mut row, &fields, "insert_accounts");
            if stamped {
                // A late commit: the row carries the stamp of its transaction.
                for stamp in ["CreatedDate", "LastModifiedDate"] {
                    if !fields.keys().any(|name| name.eq_ignore_ascii_case(stamp)) {
                        row.insert(stamp.into(), row["SystemModstamp"].clone());
                    }
                }
            }
            if row["Name"].is_null() {
                panic!("insert_accounts: Account {id} needs a Name (a required field)");
            }
            data::apply_account_formulas(&mut row);
            self.accounts.insert(id.clone(), Arc::new(row));
            ids.push(id);
        }
        ids
    }

    /// A fresh Account Id, skipping any a test inserted explicitly.
    fn next_account_id(&mut self) -> String {
        loop {
            let id = data::make_id(ACCOUNT_PREFIX, self.next_account_serial);
            self.next_account_serial += 1;
            if !self.accounts.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sets fields without API permission checks (setup and UI edits), but
    /// with type checks; panics with a clear message on a bad field.
    fn apply_fields(&self, row: &mut Row, fields: &Map<String, Value>, caller: &str) {
        for (name, value) in fields {
            if name.eq_ignore_ascii_case("Id") || name == "attributes" {
                continue;
            }
            let field = self.account_schema.field(name).unwrap_or_else(|| {
                panic!("{caller}: no field {name:?} on Account (see describe for the names)")
            });
            if field.calculated {
                panic!(
                    "{caller}: {} is a formula field and cannot be set",
                    field.name
                );
            }
            let stored = data::coerce_write(field, value).unwrap_or_else(|error| {
                panic!(
                    "{caller}: {} = {value}: {} {}",
                    field.name, error.code, error.message
                )
            });
            row.insert(field.name.clone(), stored);
        }
    }

    pub(crate) fn edit_account(&mut self, id: &str, fields: &Map<String, Value>) {
        let id =
            data::normalize_id(id).unwrap_or_else(|| panic!("edit_account: malformed Id {id:?}"));
        let mut row = self
            .accounts
            .get(&id)
            .map(|row| Row::clone(row))
            .unwrap_or_else(|| panic!("edit_account: no Account {id}"));
        touch(&mut row);
        // An explicit SystemModstamp is a late commit: the edit's transaction
        // started then, so both stamps say so.
        self.apply_fields(&mut row, fields, "edit_account");
        if fields
            .keys()
            .any(|name| name.eq_ignore_ascii_case("SystemModstamp"))
        {
            let stamp = row["SystemModstamp"].clone();
            row.insert("LastModifiedDate".into(), stamp);
        }
        self.accounts.insert(id, Arc::new(row));
    }

    pub(crate) fn delete_account(&mut self, id: &str) {
        let id =
            data::normalize_id(id).unwrap_or_else(|| panic!("delete_account: malformed Id {id:?}"));
        let row = self
            .accounts
            .get_mut(&id)
            .unwrap_or_else(|| panic!("delete_account: no Account {id}"));
        // Copy-on-write: open query cursors keep the row as it was.
        let row = Arc::make_mut(row);
        row.insert("IsDeleted".into(), json!(true));
        touch(row);
    }

    /// Restores a deleted Account from the recycle bin: visible to query
    /// again, writable, its stamp bumped.
    pub(crate) fn undelete_account(&mut self, id: &str) {
        let id = data::normalize_id(id)
            .unwrap_or_else(|| panic!("undelete_account: malformed Id {id:?}"));
        let row = self
            .accounts
            .get_mut(&id)
            .unwrap_or_else(|| panic!("undelete_account: no Account {id}"));
        let row = Arc::make_mut(row);
        assert_eq!(
            row.get("IsDeleted"),
            Some(&json!(true)),
            "undelete_account: Account {id} is not deleted"
        );
        row.insert("IsDeleted".into(), json!(false));
        row.insert("MasterRecordId".into(), Value::Null);
        touch(row);
    }

    /// Merges `losers` into `master` as Salesforce does: each loser is
    /// deleted with `MasterRecordId` = the master; the master's stamp is
    /// bumped.
    pub(crate) fn merge_accounts(&mut self, master: &str, losers: &[&str]) {
        let master = data::normalize_id(master)
            .unwrap_or_else(|| panic!("merge_accounts: malformed Id {master:?}"));
        assert!(
            self.accounts
                .get(&master)
                .is_some_and(|row| row.get("IsDeleted") != Some(&json!(true))),
            "merge_accounts: no live master Account {master}"
        );
        for loser in losers {
            let loser = data::normalize_id(loser)
                .unwrap_or_else(|| panic!("merge_accounts: malformed Id {loser:?}"));
            assert_ne!(
                loser, master,
                "merge_accounts: an Account merged into itself"
            );
            self.delete_account(&loser);
            let row = self.accounts.get_mut(&loser).expect("deleted above");
            Arc::make_mut(row).insert("MasterRecordId".into(), json!(master));
        }
        if let Some(row) = self.accounts.get_mut(&master) {
            touch(Arc::make_mut(row));
        }
    }

    /// A stored Account with every field describe still lists.
    pub(crate) fn account_view(&self, id: &str) -> Option<Map<String, Value>> {
        let id = data::normalize_id(id)?;
        self.accounts.get(&id).map(|row| self.view(row))
    }

    /// Every stored Account, in Id order, deleted ones included.
    pub(crate) fn account_views(&self) -> Vec<Map<String, Value>> {
        self.accounts.values().map(|row| self.view(row)).collect()
    }

    fn view(&self, row: &Row) -> Map<String, Value> {
        self.account_schema
            .fields()
            .iter()
            .map(|field| {
                (
                    field.name.clone(),
                    row.get(&field.name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}
