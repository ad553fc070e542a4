//! The node's one Redis connection: a single Redis (redis-rs `ConnectionManager`) or a Redis
//! Cluster (redis-rs `ClusterConnection`), both multiplexed, RESP3, reconnecting and
//! resubscribing by themselves.
//!
//! With a single Redis, relays use plain pub/sub. On a Redis Cluster they use sharded pub/sub
//! (`SSUBSCRIBE`/`SPUBLISH`): a channel lives on the shard that owns its slot, so a publish is
//! not copied to every shard, and the channel shares its hash tag with the topic's keys.
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, PushInfo, RedisError, RedisFuture, RedisResult, Value};

/// The longest any command may take, whatever state the connection is in. The client's own
/// response timeout does not cover every path through a reconnection; a command that hangs
/// would stall the node's publish queue or freeze a topic that waits for it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

async fn bounded<T>(command: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from((ErrorKind::Io, "Redis command timed out"))),
    }
}

/// A multiplexed connection to Redis or to a Redis Cluster; cheap to clone.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Connect to `urls` (one URL, or the seed nodes of a cluster), sending pub/sub pushes to
    /// `push`.
    pub async fn connect(
        urls: &[String],
        cluster: bool,
        push: impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static,
    ) -> RedisResult<Link> {
        if cluster {
            let client = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push)
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(2))
                .build()?;
            return Ok(Link::Cluster(client.get_async_connection().await?));
        }
        let url = urls.first().map(String::as_str).unwrap_or_default();
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_push_sender(push)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1));
        Ok(Link::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }

    pub async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Single(conn) => bounded(conn.subscribe(channel)).await,
            Link::Cluster(conn) => bounded(conn.ssubscribe(channel)).await,
        }
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Single(conn) => bounded(conn.unsubscribe(channel)).await,
            Link::Cluster(conn) => bounded(conn.sunsubscribe(channel)).await,
        }
    }

    /// The command that relays a message on this link's kind of channel.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Link::Single(_) => "PUBLISH",
            Link::Cluster(_) => "SPUBLISH",
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let command = match self {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        };
        Box::pin(bounded(command))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let commands = match self {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        };
        Box::pin(bounded(commands))
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}
