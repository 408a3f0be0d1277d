"""A worker must survive its Redis restarting. With celery 5.7.0 and kombu 5.7.0 (the newest releases) a
prefork worker of two or more processes exits instead: `Unrecoverable error: AttributeError("'NoneType'
object has no attribute 'hostname'")`.

Why: when the broker connection drops, celery 5.7.0's consumer (consumer.py, on_connection_error_after_
connected) calls `connection.collect()` and then, new in 5.7.0, `connection.close()`. In the first, kombu's
Redis `Channel.close()` begins by draining the BRPOP in flight (an idle pool slot waits for work); with
Redis gone that raises ConnectionError, so the close stops before marking the channel closed, and the
transport is detached (`client = None`). The second close then runs the rest on a detached channel:
restoring unacked messages needs a new pool, whose parameters read `connection.client.hostname` on None.
An AttributeError is not a connection error, so the worker's blueprint dies. A worker of one process has
no BRPOP in flight at that moment and is not affected. No setting avoids it.

The workaround, imported once by the Celery app: a connection error while draining the BRPOP no longer
stops the first close (it completes as with one process, and the second is a no-op); and a channel whose
transport is detached answers with a Redis ConnectionError, which the consumer handles, not an
AttributeError. Proven by sync/tests/test_tasks.py, which restarts a real Redis under a real worker.
Remove it once kombu's Redis channel closes cleanly after a failed drain.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

Channel = kombu_redis.Channel


def _close(self, _close=Channel.close):
    if self._in_poll and not self.closed:
        self._closing = True
        try:
            self._brpop_read()  # clears _in_poll however it ends
        except Empty:
            pass
        except self.connection_errors:
            pass  # Redis is gone: nothing in flight to drain, go on closing
    return _close(self)


def _connparams(self, asynchronous=False, _connparams=Channel._connparams):
    if self.connection is None or self.connection.client is None:
        raise RedisConnectionError("the Redis channel's connection is already closed")
    return _connparams(self, asynchronous=asynchronous)


if not getattr(Channel, "_closes_after_a_failed_drain", False):
    Channel.close = _close
    Channel._connparams = _connparams
    Channel._closes_after_a_failed_drain = True
