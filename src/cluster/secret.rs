//! The cluster's session secret, kept in Redis: the first node to start writes a random one,
//! every later node reads it, so session ids issued on one node are recognised on all of them
//! without configuring a shared secret (`--session-secret` still wins when given).
use super::{keys, unreachable, RedisBroker};
use crate::topic::StoreError;

impl RedisBroker {
    /// The secret every node of this cluster signs session ids with: `candidate` if no node
    /// wrote one yet, else the one already there. Calling it again with the secret a node
    /// holds puts it back after Redis lost its data (a restart without persistence).
    pub async fn shared_secret(&self, candidate: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let (secret,) = redis::pipe()
            .cmd("SET")
            .arg(keys::SESSION_SECRET)
            .arg(candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(keys::SESSION_SECRET)
            .query_async::<(String,)>(&mut conn)
            .await
            .map_err(unreachable)?;
        Ok(secret)
    }
}
