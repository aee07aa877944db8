"""The local stack's DynamoDB keeps DynamoDB's atomicity under concurrent
requests (infra/local/moto/ferry_moto.py): a TransactWriteItems that fails
its condition changes nothing, and in particular does not undo what other
requests wrote while it ran. moto alone does (it puts back a copy of the
tables a failed transaction touched); under load that moved Ferry's
cursors back, and every test of concurrent workers depends on it not."""

import threading

from botocore.exceptions import ClientError

from conftest import dynamo, unique

ITEMS, INCREMENTS = 300, 200


def test_a_failing_transaction_does_not_undo_a_concurrent_write():
    db, table = dynamo(), unique("atomic")
    db.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    try:
        # A table of some size: moto copies it whole for each transaction.
        for i in range(ITEMS):
            db.put_item(TableName=table, Item={"pk": {"S": f"filler-{i}"}, "fill": {"S": "x" * 200}})
        db.put_item(TableName=table, Item={"pk": {"S": "counter"}, "v": {"N": "0"}})
        stop, failed = threading.Event(), [0]

        def failing_transactions():
            while not stop.is_set():
                try:
                    db.transact_write_items(TransactItems=[
                        {"Update": {"TableName": table, "Key": {"pk": {"S": "filler-0"}},
                                    "UpdateExpression": "SET fill = :p", "ExpressionAttributeValues": {":p": {"S": "y"}}}},
                        {"ConditionCheck": {"TableName": table, "Key": {"pk": {"S": "filler-1"}},
                                            "ConditionExpression": "attribute_not_exists(pk)"}},
                    ])
                except ClientError as e:
                    assert e.response["Error"]["Code"] == "TransactionCanceledException", e
                    failed[0] += 1

        threads = [threading.Thread(target=failing_transactions) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for _ in range(INCREMENTS):
                db.update_item(TableName=table, Key={"pk": {"S": "counter"}}, UpdateExpression="SET v = v + :one",
                               ExpressionAttributeValues={":one": {"N": "1"}})
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        v = int(db.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]["v"]["N"])
        assert failed[0] > 0, "no transaction ran beside the writes"
        assert v == INCREMENTS, f"{INCREMENTS - v} of {INCREMENTS} writes undone by {failed[0]} failed transactions"
        # Nor did a failed transaction write its own update.
        fill = db.get_item(TableName=table, Key={"pk": {"S": "filler-0"}}, ConsistentRead=True)["Item"]["fill"]["S"]
        assert fill == "x" * 200, fill
    finally:
        db.delete_table(TableName=table)


def test_a_failing_transaction_leaves_every_item_it_names_as_it_was():
    """The local stack puts back the items a failed transaction names (not
    copies of whole tables): a Put of a new item, a Delete and an Update
    before the failing check are all undone, and a transaction that passes
    writes all of them."""
    db, table = dynamo(), unique("undo")
    db.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "N"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    try:
        def key(sk: int) -> dict:
            return {"pk": {"S": "p"}, "sk": {"N": str(sk)}}

        for sk in (1, 2, 3):
            db.put_item(TableName=table, Item={**key(sk), "v": {"S": f"old-{sk}"}})

        def transaction(check: str) -> list[dict]:
            return [
                {"Put": {"TableName": table, "Item": {**key(9), "v": {"S": "new"}}}},
                {"Delete": {"TableName": table, "Key": key(1)}},
                {"Update": {"TableName": table, "Key": key(2), "UpdateExpression": "SET v = :v",
                            "ExpressionAttributeValues": {":v": {"S": "updated"}}}},
                {"ConditionCheck": {"TableName": table, "Key": key(3), "ConditionExpression": check}},
            ]

        def items() -> dict[int, str]:
            got = db.query(TableName=table, KeyConditionExpression="pk = :p",
                           ExpressionAttributeValues={":p": {"S": "p"}}, ConsistentRead=True)["Items"]
            return {int(i["sk"]["N"]): i["v"]["S"] for i in got}

        try:
            db.transact_write_items(TransactItems=transaction("attribute_not_exists(pk)"))
            raise AssertionError("the check on an existing item passed")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TransactionCanceledException", e
        assert items() == {1: "old-1", 2: "old-2", 3: "old-3"}
        db.transact_write_items(TransactItems=transaction("attribute_exists(pk)"))
        assert items() == {2: "updated", 3: "old-3", 9: "new"}
    finally:
        db.delete_table(TableName=table)


def test_a_transaction_sent_again_with_its_token_is_not_applied_twice():
    """TransactWriteItems keeps its ClientRequestToken as DynamoDB does
    (moto ignores it): the same request with the same token, as an SDK
    sends it again after a lost answer, succeeds without writing again;
    the token with any other parameter changed is refused with
    IdempotentParameterMismatchException and writes nothing; a new token
    is a new request."""
    db, table = dynamo(), unique("token")
    db.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    try:
        db.put_item(TableName=table, Item={"pk": {"S": "counter"}, "v": {"N": "0"}})

        def add(n: int, token: str) -> None:
            db.transact_write_items(ClientRequestToken=token, TransactItems=[
                {"Update": {"TableName": table, "Key": {"pk": {"S": "counter"}},
                            "UpdateExpression": "SET v = v + :n", "ExpressionAttributeValues": {":n": {"N": str(n)}}}}])

        def value() -> int:
            return int(db.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]["v"]["N"])

        first, second = unique("t"), unique("t")
        add(1, first)
        add(1, first)
        assert value() == 1, "the same request with the same token was applied twice"
        try:
            add(5, first)
            raise AssertionError("the token was accepted with a different request")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "IdempotentParameterMismatchException", e
        assert value() == 1, "a refused request wrote"
        add(1, second)
        assert value() == 2, "a new token is a new request"
    finally:
        db.delete_table(TableName=table)
