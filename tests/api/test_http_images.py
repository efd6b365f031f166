"""HTTP image transfer on the API port, beside STOMP, over the same mutual TLS.

The requests are built as the Engine builds them (ovirt-engine
vdsbroker/irsbroker/HttpImageTaskVDSCommand.java: `Connection: close` and the
Storage-Pool-Id, Storage-Domain-Id, Image-Id, Volume-Id fields;
UploadStreamVDSCommand.java: a PUT with Content-Type and Content-Length, success
200; RetrieveImageDataVDSCommand.java: a GET with `Range: bytes=0-<size - 1>`,
success 206 with Content-Length equal to the size; both read the `Task-Id` field
and the Engine then polls that task). The volume is an OVF store as
ProcessOvfUpdateForStorageDomainCommand.java writes one: a tar of OVFs.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    BLANK,
    PREALLOCATED,
    RAW,
    DataCenter,
    local_data_center,
    new_id,
    wait_task,
)
from harness.pki import Pki, make_pki
from harness.vms import write_test_node
from harness.waiting import wait_for
from hostvisor.api.client import Client, connect
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.front import EVENT_LOOP_VARIABLE
from hostvisor.api.http.detect import looks_like_http
from hostvisor.api.http.parser import (
    HttpError,
    Limits,
    Request,
    byte_range,
    content_length,
    parse_head,
)
from hostvisor.api.tls import client_context
from hostvisor.supervision.config import load_config

CAPACITY = 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls(pki: Pki) -> ssl.SSLContext:
    return client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[EmbeddedHost]:
    with pytest.MonkeyPatch.context() as patch:
        # Session 20: under uvloop a TLS client that sends its ClientHello at once can
        # hang in the handshake (reported to the lead); asyncio's loop until fixed.
        patch.setenv(EVENT_LOOP_VARIABLE, "asyncio")
        yield from _host(tmp_path_factory, pki)


def _host(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[EmbeddedHost]:
    directory = tmp_path_factory.mktemp("http-host")
    config = load_config(
        state_dir=directory / "state",
        libvirt_uri=write_test_node(directory / "node.xml", []),
        management_ip="127.0.0.1",
        management_port=0,
        ssl=True,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        ca_file=pki.ca_cert,
    )
    with EmbeddedHost(config) as running:
        yield running


@pytest.fixture(scope="module")
def port(host: EmbeddedHost) -> int:
    return host.address[1]


@pytest.fixture(scope="module")
def cli(port: int, tls: ssl.SSLContext) -> Iterator[Client]:
    with connect("127.0.0.1", port, tls=tls, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def dc(cli: Client, tmp_path_factory: pytest.TempPathFactory) -> DataCenter:
    """A LOCALFS data center, this host its SPM."""
    center = local_data_center(tmp_path_factory.mktemp("sd") / "local")
    center.setup(cli)
    return center


def ovf_store_volume(cli: Client, dc: DataCenter) -> tuple[str, str]:
    """A new OVF store disk (raw, preallocated, OVFS), as the Engine creates one."""
    img, vol = new_id(), new_id()
    task = cli.Volume.create(
        **dc.ids(img, vol),
        size=str(CAPACITY),
        volFormat=RAW,
        preallocate=PREALLOCATED,
        diskType="OVFS",
        desc='{"Disk Description":"OVF_STORE"}',
        srcImgUUID=BLANK,
        srcVolUUID=BLANK,
    )
    assert wait_task(cli, task)["taskResult"] == "success"
    return img, vol


def ovf_store_tar() -> bytes:
    """A tar of OVFs and info.json, as the Engine's OvfDataUpdater builds an OVF store."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in (
            ("info.json", json.dumps({"Last Updated": "Sun Dec 06 23:00:00 UTC 2026"})),
            (f"{new_id()}.ovf", "<ovf:Envelope>" + "x" * 5000 + "</ovf:Envelope>"),
        ):
            data = text.encode()
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def engine_fields(dc: DataCenter, img: str, vol: str | None) -> dict[str, str]:
    fields = {
        "Connection": "close",
        "Storage-Pool-Id": dc.sp,
        "Storage-Domain-Id": dc.sd,
        "Image-Id": img,
    }
    if vol is not None:
        fields["Volume-Id"] = vol
    return fields


def https(port: int, tls: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=30)


def put(port: int, tls: ssl.SSLContext, fields: dict[str, str], body: bytes) -> Any:
    conn = https(port, tls)
    headers = {
        **fields,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(len(body)),
    }
    conn.request("PUT", "/", body=body, headers=headers)
    answer = conn.getresponse()
    answer.data = answer.read()
    conn.close()
    return answer


def get(port: int, tls: ssl.SSLContext, fields: dict[str, str], size: int | None) -> Any:
    conn = https(port, tls)
    headers = dict(fields)
    if size is not None:
        headers["Range"] = f"bytes=0-{size - 1}"
    conn.request("GET", "/", headers=headers)
    answer = conn.getresponse()
    answer.data = answer.read()
    conn.close()
    return answer


def raw(port: int, tls: ssl.SSLContext, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` over TLS, read until the server closes; (status, fields, body)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        tls.wrap_socket(sock, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(line.split(" ")[1]), fields, body


def vdsm_error(body: bytes) -> dict[str, Any]:
    """The JSON status the Engine parses from a failed transfer."""
    status: dict[str, Any] = json.loads(body)["status"]
    assert isinstance(status["code"], int)
    assert isinstance(status["message"], str)
    return status


def task_succeeded(cli: Client, task_id: str) -> None:
    status = wait_task(cli, task_id)
    assert status["taskResult"] == "success", status


# -- the must-show ------------------------------------------------------------------------------


def test_ovf_store_put_writes_the_volume_and_get_reads_it_back(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    data = ovf_store_tar()

    stored = put(port, tls, engine_fields(dc, img, vol), data)
    assert stored.status == 200, stored.data
    task_id = stored.getheader("Task-Id")
    assert task_id
    task_succeeded(cli, task_id)

    # The volume's own file holds exactly the bytes sent (VDSM's dd: the file ends there).
    path = Path(dc.prepare(cli, img, vol))
    assert path.read_bytes() == data

    fetched = get(port, tls, engine_fields(dc, img, vol), len(data))
    assert fetched.status == 206, fetched.data
    assert fetched.getheader("Content-Length") == str(len(data))  # the Engine compares it
    assert fetched.getheader("Content-Type") == "application/octet-stream"
    assert fetched.data == data
    read_task = fetched.getheader("Task-Id")
    assert read_task
    task_succeeded(cli, read_task)
    with tarfile.open(fileobj=io.BytesIO(fetched.data)) as tar:
        assert tar.getnames()[0] == "info.json"


def test_a_kept_alive_connection_serves_a_put_then_a_get(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    data = bytes(range(256)) * 300
    fields = {k: v for k, v in engine_fields(dc, img, vol).items() if k != "Connection"}
    conn = https(port, tls)
    conn.request("PUT", "/", body=data, headers={**fields, "Content-Length": str(len(data))})
    stored = conn.getresponse()
    stored.read()
    assert stored.status == 200
    conn.request("GET", "/", headers={**fields, "Range": f"bytes=0-{len(data) - 1}"})
    fetched = conn.getresponse()
    assert fetched.status == 206
    assert fetched.read() == data
    conn.close()
    for answer in (stored, fetched):
        task_succeeded(cli, answer.getheader("Task-Id"))


def test_stomp_is_served_while_an_upload_is_under_way(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    data = b"\x5a" * 200_000
    half = len(data) // 2
    sent_half = threading.Event()
    answer: dict[str, Any] = {}

    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        tls.wrap_socket(sock, server_hostname="127.0.0.1") as conn,
    ):
        head = "".join(f"{k}: {v}\r\n" for k, v in engine_fields(dc, img, vol).items())
        conn.sendall(
            f"PUT / HTTP/1.1\r\nHost: h\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:half]
        )
        sent_half.set()
        # The upload's task runs and waits for the rest; another client is served meanwhile.
        tasks = wait_for(
            lambda: [
                t for t, s in cli.Host.getAllTasksStatuses().items() if s["taskState"] == "running"
            ],
            30,
            "the upload's task to run",
        )
        with connect("127.0.0.1", port, tls=tls, timeout=30) as other:
            answer["spm"] = other.StoragePool.getSpmStatus(storagepoolID=dc.sp)
        conn.sendall(data[half:])
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert answer["spm"]["spmStatus"] == "SPM"
    assert received.startswith(b"HTTP/1.1 200 ")
    task_id = next(
        line.split(":", 1)[1].strip()
        for line in received.decode().split("\r\n")
        if line.lower().startswith("task-id:")
    )
    assert task_id in tasks
    task_succeeded(cli, task_id)
    assert Path(dc.prepare(cli, img, vol)).read_bytes() == data


# -- bad requests -------------------------------------------------------------------------------


def test_an_unknown_volume_is_404_with_vdsm_error(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, _vol = ovf_store_volume(cli, dc)
    missing = new_id()
    stored = put(port, tls, engine_fields(dc, img, missing), b"x" * 1000)
    assert stored.status == 404
    assert stored.getheader("Content-Type") == "application/json"
    assert vdsm_error(stored.data)["code"] == 201  # VolumeDoesNotExist
    fetched = get(port, tls, engine_fields(dc, new_id(), missing), 10)
    assert fetched.status == 404
    assert vdsm_error(fetched.data)["code"] == 268  # ImageDoesNotExistInSD


def test_missing_fields_are_400_411_and_name_what_is_missing(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    fields = engine_fields(dc, img, vol)
    del fields["Storage-Domain-Id"]
    stored = put(port, tls, fields, b"abc")
    assert stored.status == 400
    assert "Storage-Domain-Id" in vdsm_error(stored.data)["message"]

    no_range = get(port, tls, engine_fields(dc, img, vol), None)
    assert no_range.status == 400
    assert "Range" in vdsm_error(no_range.data)["message"]

    head = "".join(f"{k}: {v}\r\n" for k, v in engine_fields(dc, img, vol).items())
    status, _, body = raw(port, tls, f"PUT / HTTP/1.1\r\n{head}\r\n".encode())
    assert status == 411
    assert "Content-Length" in vdsm_error(body)["message"]


def test_a_wrong_method_is_405(port: int, tls: ssl.SSLContext) -> None:
    status, fields, body = raw(port, tls, b"DELETE / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 405
    assert fields["allow"] == "GET, PUT"
    assert "DELETE" in vdsm_error(body)["message"]


def test_oversized_headers_are_431(port: int, tls: ssl.SSLContext) -> None:
    huge = "".join(f"X-Filler-{n}: {'y' * 1000}\r\n" for n in range(80))
    status, _, body = raw(port, tls, f"GET / HTTP/1.1\r\n{huge}\r\n".encode())
    assert status == 431
    assert vdsm_error(body)["message"]
    many = "".join(f"X-{n}: 1\r\n" for n in range(200))
    assert raw(port, tls, f"GET / HTTP/1.1\r\n{many}\r\n".encode())[0] == 431


def test_malformed_requests_are_400(port: int, tls: ssl.SSLContext) -> None:
    assert raw(port, tls, b"GET / HTTP/1.1\r\n bad fold\r\n\r\n")[0] == 400
    assert raw(port, tls, b"GET / HTTP/1.1\r\nName : v\r\n\r\n")[0] == 400
    assert raw(port, tls, b"GET http://x/ HTTP/1.1\r\n\r\n")[0] == 400
    assert raw(port, tls, b"GET / HTTP/2.0\r\n\r\n")[0] == 505
    two = b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    assert raw(port, tls, two)[0] == 400


def test_past_the_volume_is_413_or_416(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    stored = put(port, tls, engine_fields(dc, img, vol), b"z" * (CAPACITY + 1))
    assert stored.status == 413
    fetched = get(port, tls, engine_fields(dc, img, vol), CAPACITY + 4096)
    assert fetched.status == 416
    assert fetched.getheader("Content-Range") == f"bytes */{CAPACITY}"


def test_stomp_on_the_same_port_still_serves_after_bad_http(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    for bad in (b"POST / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n"):
        raw(port, tls, bad)
    with connect("127.0.0.1", port, tls=tls, timeout=30) as other:
        assert other.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "SPM"
    assert cli.Host.getAllTasksStatuses() is not None


def test_a_put_that_expects_100_continue_gets_it_before_sending(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    data = b"continued" * 1000
    head = "".join(f"{k}: {v}\r\n" for k, v in engine_fields(dc, img, vol).items())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        tls.wrap_socket(sock, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(
            f"PUT / HTTP/1.1\r\n{head}Expect: 100-continue\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
        )
        assert conn.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert Path(dc.prepare(cli, img, vol)).read_bytes() == data


# -- the parser alone ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: h", None),
        (b"GET / HTTP/1.1\nHost: h", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b", 400),
        (b"GET  / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\n: empty-name", 400),
        (b"G(T / HTTP/1.1", 400),
        (b"GET / HTTP/0.9", 505),
        (b"GET / HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=0-2", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101, 431),
    ],
)
def test_the_parser_is_strict(head: bytes, status: int | None) -> None:
    if status is None:
        assert parse_head(head, Limits()).get("HOST") == "h"
        return
    with pytest.raises(HttpError) as refused:
        parse_head(head, Limits())
    assert refused.value.status == status


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"range": "bytes=0-99"}, (0, 100)),
        ({"range": "bytes=10-10"}, (10, 1)),
        ({"range": "bytes=0-"}, 400),
        ({"range": "bytes=-5"}, 400),
        ({"range": "bytes=0-1,4-5"}, 400),
        ({"range": "bytes=9-3"}, 400),
        ({}, 400),
    ],
)
def test_ranges_as_vdsm_reads_them(fields: dict[str, str], expected: Any) -> None:
    request = Request("GET", "/", (1, 1), fields)
    if isinstance(expected, tuple):
        assert byte_range(request) == expected
        return
    with pytest.raises(HttpError) as refused:
        byte_range(request)
    assert refused.value.status == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"content-length": "12"}, 12),
        ({}, 411),
        ({"transfer-encoding": "chunked"}, 411),
        ({"transfer-encoding": "chunked", "content-length": "3"}, 400),
        ({"content-length": "-1"}, 400),
        ({"content-length": "1e3"}, 400),
        ({"content-length": str(Limits().max_body + 1)}, 413),
    ],
)
def test_content_length_as_vdsm_reads_it(fields: dict[str, str], expected: int) -> None:
    request = Request("PUT", "/", (1, 1), fields)
    if expected < 400:
        assert content_length(request, Limits()) == expected
        return
    with pytest.raises(HttpError) as refused:
        content_length(request, Limits())
    assert refused.value.status == expected


def test_keep_alive_follows_the_version_and_connection_field() -> None:
    assert Request("GET", "/", (1, 1), {}).keep_alive
    assert not Request("GET", "/", (1, 1), {"connection": "close"}).keep_alive
    assert not Request("GET", "/", (1, 0), {}).keep_alive
    assert Request("GET", "/", (1, 0), {"connection": "Keep-Alive"}).keep_alive


@pytest.mark.parametrize(
    ("prefix", "http"),
    [
        (b"PUT / HTTP/1.1", True),
        (b"GET / HTTP/1.1", True),
        (b"OPTIONS * HT", True),
        (b"CONNECT\naccep", False),
        (b"SEND\ndestina", False),
        (b"get / HTTP/1", False),
        (b"\x16\x03\x01\x02\x00", False),
    ],
)
def test_detection_tells_http_from_stomp(prefix: bytes, http: bool) -> None:
    assert looks_like_http(prefix) is http


def test_a_peer_that_leaves_mid_body_fails_only_its_task(
    cli: Client, dc: DataCenter, port: int, tls: ssl.SSLContext
) -> None:
    img, vol = ovf_store_volume(cli, dc)
    head = "".join(f"{k}: {v}\r\n" for k, v in engine_fields(dc, img, vol).items())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        tls.wrap_socket(sock, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(f"PUT / HTTP/1.1\r\n{head}Content-Length: 100000\r\n\r\n".encode() + b"a" * 10)
        running = wait_for(
            lambda: [
                t for t, s in cli.Host.getAllTasksStatuses().items() if s["taskState"] == "running"
            ],
            30,
            "the upload's task to run",
        )
    status = wait_task(cli, running[0])
    assert status["taskResult"] != "success"
    assert status["code"] == 2001  # VDSM's MiscFileReadException: partial data
    assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "SPM"
