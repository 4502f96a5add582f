pub(crate) mod chat_histories;
pub(crate) mod conversations;
