"""moto's server with three changes of Ferry's: MSK's GetBootstrapBrokers,
which moto (5.2.5) does not implement; DynamoDB's atomicity, which it does
not keep under concurrent requests; and TransactWriteItems' idempotency
token, which it ignores (see `idempotent` below).

DynamoDB applies each write, and each TransactWriteItems, atomically: a
condition is checked against, and the write applied to, the item as no
other request is changing it, and a transaction that fails changes
nothing. moto's server answers requests on threads and its DynamoDB
backend takes no lock: a conditional update can pass its check while
another request changes the item, and a failing TransactWriteItems puts
back a copy of every table it touched as they were when it began,
undoing what other requests wrote meanwhile (a checkpoint, a lease).
Under load, that moved a cursor back and Ferry copied records twice
(bench/scale, 2026-12-05). Here every DynamoDB call holds one lock, so
each is atomic as DynamoDB's are; tests/e2e/test_local_dynamodb.py shows a
failing transaction no longer undoes a concurrent write.

`GET /v1/clusters/{clusterArn}/bootstrap-brokers` answers, for a cluster
moto holds (created with kafka's CreateCluster or CreateClusterV2), the
bootstrap fields registered on it as tags named after the fields:
`BootstrapBrokerString`, `BootstrapBrokerStringTls`,
`BootstrapBrokerStringSaslScram`, `BootstrapBrokerStringSaslIam` and the
`...Public...` and `...VpcConnectivity...` ones. A field without its tag is
absent from the answer, as AWS leaves out the listeners a cluster does not
have; a cluster moto does not hold is `NotFoundException`, as in AWS.

What this proves: that Ferry calls GetBootstrapBrokers through the AWS SDK
with the cluster's ARN (and so that the IAM rehearsal sees the call), which
field it takes for the configured authentication, and what it does when the
field is absent. What it does not: which fields AWS really returns for a
cluster's settings, and their values (the tests register local brokers).

And two of speed, as every test shares this one Python process and the
machine's two cores: which backend serves a host is worked out once per
host (moto matched every request's host against the URL patterns of all
its services, a quarter of its time in a test run), and only failed
requests (4xx and 5xx) are logged (a line for each of hundreds of
thousands of requests took a tenth).

Run as moto_server is run: `python ferry_moto.py -H 127.0.0.1 -p PORT`.
"""

import collections
import functools
import hashlib
import json
import sys
import threading
import time
from urllib.parse import unquote

from moto.core.responses import ActionResult
from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

from moto.kafka.exceptions import NotFoundException
from moto.kafka.models import FakeKafkaCluster
from moto.kafka.responses import KafkaResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from werkzeug.serving import WSGIRequestHandler

# The fields of GetBootstrapBrokers' answer (the AWS API reference).
FIELDS = (
    "BootstrapBrokerString",
    "BootstrapBrokerStringTls",
    "BootstrapBrokerStringSaslScram",
    "BootstrapBrokerStringSaslIam",
    "BootstrapBrokerStringPublicTls",
    "BootstrapBrokerStringPublicSaslScram",
    "BootstrapBrokerStringPublicSaslIam",
    "BootstrapBrokerStringVpcConnectivityTls",
    "BootstrapBrokerStringVpcConnectivitySaslScram",
    "BootstrapBrokerStringVpcConnectivitySaslIam",
)


def get_bootstrap_brokers(self: KafkaResponse) -> str:
    # The path is /v1/clusters/<url-encoded ARN>/bootstrap-brokers.
    path = self.parsed_url.path
    arn = unquote(path[len("/v1/clusters/"):-len("/bootstrap-brokers")])
    if arn not in self.kafka_backend.clusters:
        raise NotFoundException(f"Resource not found: {arn}")
    tags = self.kafka_backend.list_tags_for_resource(arn)
    # The REST API's JSON names are camelCase (bootstrapBrokerStringSaslIam).
    return json.dumps({f[0].lower() + f[1:]: tags[f] for f in FIELDS if f in tags})


def aws_shaped_arn(self: FakeKafkaCluster) -> str:
    """The ARN as AWS shapes it, `...:cluster/<name>/<uuid>-<n>`; moto's
    own leaves the name out, which Ferry (like IAM's resource ARNs for
    topics and groups) reads the cluster's name from."""
    kind = "cluster" if self.cluster_type == "PROVISIONED" else "serverless-cluster"
    partition = "aws-cn" if self.region_name.startswith("cn-") else "aws"
    return f"arn:{partition}:kafka:{self.region_name}:{self.account_id}:{kind}/{self.cluster_name}/{self.cluster_id}-1"


KafkaResponse.get_bootstrap_brokers = get_bootstrap_brokers
FakeKafkaCluster._generate_arn = aws_shaped_arn

# One lock for every DynamoDB call (reentrant: calls call each other).
DYNAMODB_LOCK = threading.RLock()


def atomic(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with DYNAMODB_LOCK:
            return method(*args, **kwargs)

    return locked



def undo_by_item(transact):
    """TransactWriteItems that undoes a failure item by item. moto keeps a
    deep copy of every table a transaction touches, taken again for each
    of its items, to put back on failure: a checkpoint of 100 offset-map
    runs copied that table 100 times, whatever it held from every earlier
    test. Its memory grew to 20 GB on a compacted topic's runs (a run per
    record) and the machine stalled. Here the tables are not copied: the
    items the transaction names are, before it runs, and put back as they
    were when it fails (under the lock, nothing else changed them)."""

    @functools.wraps(transact)
    def transact_write_items(self, transact_items):
        before = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            if "Key" in op:
                key = op["Key"]
            else:
                key = {a: op["Item"].get(a) for a in (table.hash_key_attr, table.range_key_attr) if a}
                if None in key.values():
                    continue  # moto refuses it before writing anything
            item = self.get_item(table.name, key)
            before.append((table.name, key, None if item is None else item.to_json()["Attributes"]))
        Table.__deepcopy__ = lambda table, memo: table
        try:
            return transact(self, transact_items)
        except Exception:
            for table_name, key, attrs in reversed(before):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise
        finally:
            del Table.__deepcopy__

    return transact_write_items


DynamoDBBackend.transact_write_items = undo_by_item(DynamoDBBackend.transact_write_items)

# How long DynamoDB remembers a TransactWriteItems' ClientRequestToken.
TOKEN_WINDOW_S = 600.0


class IdempotentParameterMismatchException(DynamodbException):
    def __init__(self, token: str):
        super().__init__(
            ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
            message=f"Request with client token {token} was already used with different parameters",
        )


def idempotent(handler):
    """TransactWriteItems that keeps its ClientRequestToken as DynamoDB
    does, which moto ignores. A request whose token succeeded less than
    ten minutes ago succeeds again without writing anything if it is the
    same request, and is refused with IdempotentParameterMismatchException
    if any other parameter differs. The AWS SDKs fill the token in
    themselves and send it unchanged when they retry an attempt: a
    transaction whose answer was lost (a timeout) is then not applied
    twice. Without this, moto applied the retry again, and a checkpoint's
    second copy failed its own cursor condition (bench/scale,
    2026-12-06). DynamoDB's documentation does not say what it does with
    a token whose request failed; here it is not kept (the SDKs do not
    send a cancelled transaction again). A copy that arrives while the
    first is still being applied waits for it here (one lock) and is
    answered as done; DynamoDB answers it TransactionInProgressException,
    which the SDKs retry as they retry throttling."""

    # token -> (digest of the request, when it succeeded), and the tokens
    # oldest first, so that forgetting them is not a sweep of them all
    # under the lock every DynamoDB call takes (bench/scale sends tens of
    # thousands in ten minutes).
    done: dict[str, tuple[str, float]] = {}
    order: collections.deque = collections.deque()

    @functools.wraps(handler)
    def transact_write_items(self):
        token = self.body.get("ClientRequestToken")
        if not token:
            return handler(self)
        request = json.dumps({k: v for k, v in self.body.items() if k != "ClientRequestToken"}, sort_keys=True)
        digest = hashlib.sha256(request.encode()).hexdigest()
        with DYNAMODB_LOCK:
            now = time.monotonic()
            # A token is kept once (one already kept is answered below
            # without being kept again): the oldest in `order` is the
            # oldest in `done`.
            while order and now - order[0][0] > TOKEN_WINDOW_S:
                del done[order.popleft()[1]]
            if token in done:
                if done[token][0] != digest:
                    raise IdempotentParameterMismatchException(token)
                return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
            result = handler(self)
            at = time.monotonic()
            done[token] = (digest, at)
            order.append((at, token))
            return result

    return transact_write_items


DynamoHandler.transact_write_items = idempotent(DynamoHandler.transact_write_items)

for _name, _method in list(vars(DynamoDBBackend).items()):
    if callable(_method) and not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, atomic(_method))

_find_backend = DomainDispatcherApplication.get_backend_for_host
_backend_by_host: dict = {}


def backend_for_host(self: DomainDispatcherApplication, host):
    """The backend serving `host`, found once: the URL patterns are fixed
    when moto starts, so the answer for a host never changes."""
    if host not in _backend_by_host:
        _backend_by_host[host] = _find_backend(self, host)
    return _backend_by_host[host]


DomainDispatcherApplication.get_backend_for_host = backend_for_host

_log_request = WSGIRequestHandler.log_request


def log_failed_request(self: WSGIRequestHandler, code="-", size="-") -> None:
    try:
        if int(code) < 400:
            return
    except (TypeError, ValueError):
        pass
    _log_request(self, code, size)


WSGIRequestHandler.log_request = log_failed_request

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
