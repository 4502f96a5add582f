pub(crate) mod chat_histories;
