"""``khoa`` prints a secret's ARN as it is: its ``:secret:`` is not turned into an emoji (Rich's
``:secret:`` code) by any list command's table, piped or not."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def khoa(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHOA_")}
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_webhooks_list_prints_a_secret_arn_verbatim(server: KhoaServer) -> None:
    data = ("--data-dir", str(server.data_dir))
    prefix = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:verbatim/{uuid.uuid4().hex[:8]}:smile:"
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex}"  # never delivered: nothing listens on port 9
    hooked = khoa("webhooks", "register", url, "--account", ACCOUNT_ID, "--secret-prefix", prefix, *data)
    assert hooked.returncode == 0, hooked.stderr
    webhook_id = hooked.stdout.split()[2]  # "Registered webhook <id> → <url>"
    try:
        table = khoa("webhooks", "list", *data)  # piped, as a script reads it
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if webhook_id in line)
        assert url in row and prefix in row, row
        assert "㊙" not in table.stdout and "😄" not in table.stdout
    finally:
        assert khoa("webhooks", "delete", webhook_id, *data).returncode == 0
