pub(crate) mod notification_records;
