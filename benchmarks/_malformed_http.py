"""Malformed requests around a valid image: multipart forms, phrases, query values, body size,
HTTP framing (raw sockets), content negotiation, methods and paths, request ids, encodings."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Sequence
from functools import partial

from benchmarks import _malformed_images as im
from benchmarks._malformed_cases import CHEAP, PNG, Case, Req, base_dicom, base_png

GROUND = "/v1/ground"
MAX_BODY = 64 * 1024 * 1024  # CXR_MAX_BODY_BYTES default
Part = tuple[str, str | None, str | None, bytes]  # field name, filename, content type, bytes


def _form(
    kind: str,
    name: str,
    parts: Sequence[Part],
    path: str = "/v1/report",
    params: tuple[tuple[str, str], ...] = CHEAP,
) -> Case:
    def make() -> Req:
        body, ctype = im.multipart(parts)
        return Req(body, ctype, path, params=params)

    return Case(kind, name, make)


def multipart_cases() -> Iterator[Case]:
    img = base_png()
    file = ("file", "x.png", PNG, img)
    yield _form(
        "multipart-without-file", "only a phrase field", [("phrase", None, None, b"lung")], GROUND
    )
    yield _form(
        "multipart-without-file", "image under field 'image'", [("image", "x.png", PNG, img)]
    )
    yield _form("multipart-without-file", "'file' as a text field", [("file", None, None, b"abc")])
    yield _form("multipart-without-file", "no parts at all", [])
    yield _form("multipart-two-files", "two 'file' parts", [file, file])
    yield _form(
        "multipart-two-files", "'file' + 'extra' file", [file, ("extra", "y.png", PNG, img)]
    )
    yield _form(
        "multipart-odd-fields",
        "filename ../../etc/passwd",
        [("file", "../../etc/passwd", PNG, img)],
    )
    yield _form("multipart-odd-fields", "filename 5000 chars", [("file", "f" * 5000, PNG, img)])
    yield _form(
        "multipart-odd-fields", "part type text/plain", [("file", "x.txt", "text/plain", img)]
    )
    yield _form(
        "multipart-odd-fields",
        "unknown fields x20",
        [file] + [(f"k{i}", None, None, b"v") for i in range(20)],
    )
    body, ctype = im.multipart([file])
    for name, b, t in (
        ("no boundary parameter", body, "multipart/form-data"),
        ("other boundary", body, "multipart/form-data; boundary=nope"),
        ("no closing boundary", body[: -len(im.BOUNDARY) - 6], ctype),
        ("truncated mid-part", body[: len(body) // 2], ctype),
        ("no Content-Disposition", body.replace(b"Content-Disposition", b"X-Nothing", 1), ctype),
    ):
        yield Case("multipart-malformed", name, partial(Req, b, t))


def phrase_cases() -> Iterator[Case]:
    img = ("file", "x.png", PNG, base_png())
    lung = (("phrase", "left lung"),)
    yield _form(
        "phrase-enormous", "form phrase 20 KB", [img, ("phrase", None, None, b"a" * 20_000)], GROUND
    )
    yield _form(
        "phrase-enormous",
        "form phrase 201 chars",
        [img, ("phrase", None, None, b"a" * 201)],
        GROUND,
    )
    for n in (8_000, 60_000):
        yield _form(
            "phrase-enormous", f"query phrase {n} chars", [img], GROUND, (("phrase", "a" * n),)
        )
    for name, raw in (
        ("bytes ff fe fd", b"\xff\xfe\xfd"),
        ("lone surrogate", b"\xed\xa0\x80"),
        ("overlong NUL", b"\xc0\x80"),
    ):
        yield _form(
            "phrase-invalid-utf8", f"form {name}", [img, ("phrase", None, None, raw)], GROUND
        )
    yield Case("phrase-invalid-utf8", "query %FF%FE", lambda: _ground_raw_query("phrase=%FF%FE"))
    for name, text in (
        ("NUL", "a\x00b"),
        ("newline", "a\nb"),
        ("empty", ""),
        ("spaces", "   "),
        ("RTL override", "\u202elung"),
        ("emoji", "lung \U0001f480"),
    ):
        yield _form("phrase-odd-text", name, [img], GROUND, (("phrase", text),))
    yield _form("phrase-count", "9 phrases", [img], GROUND, lung * 9)
    yield _form("phrase-count", "no phrase", [img], GROUND, ())
    many = [img] + [("phrase", None, None, b"lung")] * 300
    yield _form("phrase-count", "300 form phrases", many, GROUND, lung)


def _ground_raw_query(query: str) -> Req:
    body, ctype = im.multipart([("file", "x.png", PNG, base_png())])
    return Req(body, ctype, f"{GROUND}?{query}", params=())


BAD_QUERIES = (
    ("beam_size", "0"),
    ("beam_size", "6"),
    ("beam_size", "-1"),
    ("beam_size", "abc"),
    ("beam_size", "1e3"),
    ("max_new_tokens", "0"),
    ("max_new_tokens", "201"),
    ("max_new_tokens", "1001"),
    ("max_new_tokens", "9" * 30),
    ("heatmap_size", "7"),
    ("heatmap_size", "8193"),
    ("heatmap_size", "x"),
    ("heatmaps", "maybe"),
    ("colormap", "2"),
    ("repetition_penalty", "nan"),
    ("repetition_penalty", "inf"),
    ("repetition_penalty", "0.5"),
    ("length_penalty", "-1"),
    ("length_penalty", "nan"),
    ("min_new_tokens", "-1"),
    ("min_new_tokens", "201"),
    ("unknown_param", "1"),
)


def query_cases() -> Iterator[Case]:
    img = base_png
    for key, value in BAD_QUERIES:
        params = tuple(p for p in CHEAP if p[0] != key) + ((key, value),)
        yield Case("bad-query-value", f"{key}={value[:12]}", partial(_png_req, params))
    twice = CHEAP + (("beam_size", "2"),)
    yield Case("bad-query-value", "beam_size twice", lambda: Req(img(), PNG, params=twice))
    yield Case(
        "bad-query-value",
        "min > max tokens",
        lambda: Req(img(), PNG, params=CHEAP + (("min_new_tokens", "50"),)),
    )


Pairs = tuple[tuple[str, str], ...]


def _png_req(params: Pairs, headers: Pairs = ()) -> Req:
    return Req(base_png(), PNG, params=params, headers=headers)


def _typed_req(body: Callable[[], bytes], ctype: str, headers: Pairs) -> Req:
    return Req(body(), ctype, headers=headers)


def _method_req(method: str, path: str) -> Req:
    return Req(base_png(), PNG, path, method)


def _raw_req(target: str, headers: dict[str, str], body: bytes) -> Req:
    return Req(raw=_head(target, headers, body))


def _head(target: str, extra: dict[str, str], body: bytes = b"") -> bytes:
    return im.raw_http("POST", target, {"Content-Type": PNG, **extra}, body)


def body_limit_cases() -> Iterator[Case]:
    t = "/v1/report?beam_size=1&max_new_tokens=8"
    over = str(MAX_BODY + 1)
    yield Case(
        "body-over-limit",
        "Content-Length limit+1",
        lambda: Req(raw=_head(t, {"Content-Length": over}, b"\0" * 65536)),
    )
    yield Case(
        "body-over-limit",
        "chunked, 70 MiB streamed",
        lambda: Req(raw=_head(t, {"Transfer-Encoding": "chunked"}), stream_mib=70),
    )
    yield Case(
        "body-over-limit",
        "64 MiB raw body, no pixels",
        lambda: Req(im.PNG_SIG + bytes(MAX_BODY - 8), PNG),
    )


def framing_cases() -> Iterator[Case]:
    t = "/v1/report?beam_size=1&max_new_tokens=8"
    img = base_png()
    n = str(len(img))
    for name, headers, body in (
        ("Content-Length abc", {"Content-Length": "abc"}, img),
        ("two Content-Lengths", {"Content-Length": f"{n}\r\nContent-Length: 5"}, img),
        ("Content-Length shorter than body", {"Content-Length": "100"}, img),
        (
            "Transfer-Encoding + Content-Length",
            {"Transfer-Encoding": "chunked", "Content-Length": n},
            img,
        ),
        ("bad chunk size", {"Transfer-Encoding": "chunked"}, b"zz\r\n" + img),
        ("Expect 100-continue", {"Expect": "100-continue", "Content-Length": n}, img),
        ("header value with \\x01", {"X-Odd": "a\x01b", "Content-Length": n}, img),
        ("header 70 KB", {"X-Big": "a" * 70_000, "Content-Length": n}, img),
    ):
        yield Case("http-framing", name, partial(_raw_req, t, headers, body))
    yield Case(
        "http-framing",
        "garbage request line",
        lambda: Req(raw=b"\x16\x03\x01\x02\x00 hello\r\n\r\n"),
    )
    yield Case(
        "http-framing", "HTTP/1.0 without Host", lambda: Req(raw=b"GET /v1/model HTTP/1.0\r\n\r\n")
    )


def protocol_cases() -> Iterator[Case]:
    img, dcm = base_png, base_dicom
    for name, accept, body, ctype in (
        ("DICOM SR for a PNG", "application/dicom", img, PNG),
        ("DICOM SR for a DICOM", "application/dicom", dcm, "application/dicom"),
        ("FHIR", "application/fhir+json", img, PNG),
        ("text/html only", "text/html", img, PNG),
        ("garbage", ";;;,,q=abc", img, PNG),
    ):
        hdr = (("Accept", accept),)
        yield Case("accept-negotiation", name, partial(_typed_req, body, ctype, hdr))
    for method, path in (
        ("GET", "/v1/report"),
        ("PUT", "/v1/report"),
        ("DELETE", "/v1/model"),
        ("POST", "/v2/report"),
        ("POST", "//v1/report"),
        ("OPTIONS", "/v1/report"),
        ("HEAD", "/v1/model"),
        ("POST", "/v1/report/../model"),
    ):
        yield Case("method-or-path", f"{method} {path}", partial(_method_req, method, path))


def header_cases() -> Iterator[Case]:
    img = base_png
    for name, rid in (
        ("200 chars", "a" * 200),
        ("spaces", "a b c"),
        ("latin-1", "é\xe9"),
        ("valid", "bench-1"),
    ):
        yield Case("odd-request-id", name, partial(_png_req, CHEAP, (("X-Request-ID", rid),)))
    gz = (("Content-Encoding", "gzip"),)
    yield Case("content-encoding", "gzip PNG", lambda: Req(gzip.compress(img()), PNG, headers=gz))
    yield Case(
        "content-encoding",
        "br claimed, plain PNG",
        lambda: Req(img(), PNG, headers=(("Content-Encoding", "br"),)),
    )
    auth: tuple[tuple[str, tuple[str, str]], ...] = (
        ("Bearer garbage", ("Authorization", "Bearer x")),
        ("X-API-Key 5000 chars", ("X-API-Key", "k" * 5000)),
    )
    for name, header in auth:
        yield Case("auth-headers-auth-off", name, partial(_png_req, CHEAP, (header,)))
