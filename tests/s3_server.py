"""A real S3-protocol server for the object-storage tests: moto's server mode on a free local
port, with IAM authentication on, so wrong credentials are refused as AWS refuses them.

The tests reach it the way users reach S3: through the standard environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`), read by s3fs and botocore.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "corpus-bucket"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key_id: str
    secret: str
    bucket: str

    def env(self, **changes: str) -> dict[str, str]:
        """The environment a user would set for this store (`changes` override it)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            **changes,
        }

    def client(self):
        """A boto3 client with this server's credentials (a fresh session: boto3's default one
        caches the credentials it first saw)."""
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret
        )
        return session.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def objects(self, prefix: str = "") -> dict[str, tuple[str, ...]]:
        """key -> the version ids of every object under `prefix`. The bucket keeps versions, so
        any write, even of the same bytes in the same second, adds one."""
        pages = (
            self.client()
            .get_paginator("list_object_versions")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        versions: dict[str, list[str]] = {}
        for page in pages:
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                versions.setdefault(v["Key"], []).append(v["VersionId"])
        return {key: tuple(sorted(ids)) for key, ids in versions.items()}

    def upload(self, folder: Path, prefix: str) -> str:
        """Copy a local folder under `prefix`; returns its s3:// URL."""
        client = self.client()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.upload_file(
                str(path), self.bucket, f"{prefix}/{path.relative_to(folder).as_posix()}"
            )
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def s3():
    """The server, with one bucket and an IAM user allowed everything; the environment points
    at it from the first test that asks for it on. One per session: moto's backends and its
    count of unauthenticated calls are global to the process."""
    pytest.importorskip(
        "moto", reason="moto[server] is a test dependency (pip install -e '.[test]')"
    )
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = (
        4  # the four IAM calls below; then every call is checked
    )
    try:
        boot = boto3.session.Session(aws_access_key_id="boot", aws_secret_access_key="boot")
        iam = boot.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        iam.create_user(UserName="curate")
        key = iam.create_access_key(UserName="curate")["AccessKey"]
        allow = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        policy = iam.create_policy(PolicyName="curate", PolicyDocument=json.dumps(allow))
        iam.attach_user_policy(UserName="curate", PolicyArn=policy["Policy"]["Arn"])
        store = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], BUCKET)
        store.client().create_bucket(Bucket=BUCKET)
        store.client().put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        with pytest.MonkeyPatch.context() as patch:
            for name, value in store.env().items():
                patch.setenv(name, value)
            fresh_clients()
            yield store
        fresh_clients()
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


def fresh_clients() -> None:
    """Forget cached s3fs filesystems, so the next one reads the environment again."""
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
