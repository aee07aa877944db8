"""MSK IAM tokens made by botocore's SigV4 query signer, a signer nobody
here wrote, for tests that must present a token Ferry would never make
(signed in the past, for another action). Same shape as the token of
aws-msk-iam-sasl-signer: the base64url text (unpadded) of a presigned
`kafka-cluster:Connect` URL for https://kafka.<region>.amazonaws.com/,
with a User-Agent parameter appended after signing."""

import base64
import datetime
from unittest import mock
from urllib.parse import urlencode

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def sign_token(region: str, access_key: str, secret_key: str, *, session_token: str | None = None,
               signed_at: datetime.datetime | None = None, expires: int = 900,
               action: str = "kafka-cluster:Connect") -> str:
    request = AWSRequest(method="GET", url=f"https://kafka.{region}.amazonaws.com/?" + urlencode({"Action": action}))
    signer = botocore.auth.SigV4QueryAuth(Credentials(access_key, secret_key, session_token), "kafka-cluster", region,
                                          expires=expires)
    when = signed_at or datetime.datetime.now(datetime.timezone.utc)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    url = request.url + "&" + urlencode({"User-Agent": "ferry-tests-botocore"})
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
