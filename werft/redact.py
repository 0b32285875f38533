"""One redaction layer: every secret value werft has handed out in this process is masked
in every log record, wherever it was logged from and whatever handler writes it.

The secret store (``werft.secrets``) registers each value it resolves or reads, Prefect
Secret blocks register theirs, and derived credentials (seed URL tokens, an HTTP Basic
header) are registered where they are made. ``install()`` -- called once where werft
starts -- makes every log record pass through ``redact`` as it is created: its message
(after %-formatting), its traceback and its stack. That is a record factory rather than a
filter on the ``werft`` and ``prefect`` loggers because a logger's filters never see the
records of its child loggers (``werft.stages``, ``prefect.task_runs``) nor those of httpx
or the kubernetes client, and handlers come and go (Prefect adds its API handler per run,
pytest its capture handler).

Texts that leave the process without logging (a Condition's message, an artifact) go
through ``redact`` where they are built (``werft.conditions.Condition`` does it for every
message).

Matching is by exact substring. Of a multi-line value (a PEM key, a kubeconfig), the key
material is also registered piece by piece (``_credential_words``), so a key that shows up
re-wrapped or with escaped newlines is still caught. Values shorter than ``MIN_LENGTH``
are not registered: masking a 3-letter password everywhere would garble every log line
and hide nothing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Iterator

MASK = "***"
MIN_LENGTH = 6
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=]{16,}")
_WORD = re.compile(r"[A-Za-z0-9+/=_\-]{16,}")


class _Bucket:
    """The values that share their first ``MIN_LENGTH`` characters, by length, longest
    first: a match costs one set lookup per distinct length. Thousands of values can share
    a prefix (every PEM body line of a fleet's keys starts ``MIIEvQ``...), so adding one
    must not copy or sort the others."""

    __slots__ = ("lengths", "values")

    def __init__(self) -> None:
        self.lengths: tuple[int, ...] = ()
        self.values: dict[int, set[str]] = {}

    def add(self, value: str) -> None:
        same = self.values.get(len(value))
        if same is not None:
            same.add(value)
            return
        # The set first, then the lengths, swapped in whole: a thread masking meanwhile
        # never looks up a length it cannot find.
        self.values[len(value)] = {value}
        self.lengths = tuple(sorted((*self.lengths, len(value)), reverse=True))

    def match(self, text: str, at: int) -> int:
        """The length of the longest value at ``text[at:]``, 0 if none."""
        for length in self.lengths:
            if text[at : at + length] in self.values[length]:
                return length
        return 0


class _Registry:
    """The values to mask, indexed by their first ``MIN_LENGTH`` characters, so masking a
    text costs one dict lookup per character whatever the number of secrets, and
    registering one costs O(1) however many are known (a fleet run registers every
    cluster's keys: tens of thousands)."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, _Bucket] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if value in self._known:
                    continue
                self._known.add(value)
                bucket = self._by_prefix.get(value[:MIN_LENGTH])
                if bucket is None:
                    bucket = _Bucket()
                    bucket.add(value)
                    self._by_prefix[value[:MIN_LENGTH]] = bucket  # published complete
                else:
                    bucket.add(value)

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def redact(self, text: str) -> str:
        index = self._by_prefix
        if not index or len(text) < MIN_LENGTH:
            return text
        out: list[str] = []
        start = i = 0
        end = len(text) - MIN_LENGTH + 1
        while i < end:
            bucket = index.get(text[i : i + MIN_LENGTH])
            if bucket is not None:
                length = bucket.match(text, i)
                if length:
                    out.append(text[start:i])
                    out.append(MASK)
                    i = start = i + length
                    continue
            i += 1
        if not out:
            return text
        out.append(text[start:])
        return "".join(out)

    def clear(self) -> None:
        with self._lock:
            self._by_prefix = {}
            self._known = set()


_registry = _Registry()


def register_secret(value: str | bytes | None) -> None:
    """Mask ``value`` (and each of its lines) in every log record from now on."""
    if value is None:
        return
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return
    parts = {value.strip()}
    if "\n" in value:
        parts.update(_credential_words(value))
    _registry.add(p for p in parts if len(p) >= MIN_LENGTH)


def _credential_words(text: str) -> set[str]:
    """The pieces of a multi-line secret that are key material on their own: PEM body
    lines, and long random-looking words (a kubeconfig's token or key data). Not its
    structure -- ``apiVersion: v1``, a server URL, a cluster name are no secret, and
    masking them would garble every log line that mentions them."""
    words: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if _PEM_BODY.fullmatch(line):
            words.add(line)
            continue
        for word in _WORD.findall(line):
            if _looks_random(word):
                words.add(word)
    return words


def _looks_random(word: str) -> bool:
    # Generated tokens and base64 mix cases and digits; names and identifiers do not.
    return (
        any(c.isupper() for c in word)
        and any(c.islower() for c in word)
        and any(c.isdigit() for c in word)
    )


def register_basic_auth(user: str, password: str) -> None:
    """A BMC credential: the password, and the ``Authorization: Basic`` value that carries
    it (an echoed request shows the header, not the password)."""
    register_secret(password)
    register_secret(base64.b64encode(f"{user}:{password}".encode()).decode())


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _registry.redact(text)


def forget_all() -> None:
    """Tests only: start from an empty registry."""
    _registry.clear()


# --- exceptions that leave werft -----------------------------------------------------------


class RedactedError(RuntimeError):
    """An exception whose text held a secret and could not be masked in place; the text
    here is masked, the original type named in it."""


def scrub(exc: BaseException) -> BaseException:
    """``exc`` with its text masked: its string args masked in place (same type, so retry
    conditions still see a TransientError), or -- when its text does not come from its
    args (OSError, YAML errors) and still shows a secret -- a ``RedactedError`` instead.
    The chained context is hidden: it may hold an httpx request and its headers."""
    exc.__suppress_context__ = True
    exc.__cause__ = None
    if not _registry:
        return exc
    exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    text = _text_of(exc)
    masked = redact(text)
    if masked == text:
        return exc
    return RedactedError(f"{type(exc).__name__}: {masked}")


@contextlib.contextmanager
def redacted_exceptions() -> Iterator[None]:
    """Around a task body: an exception that escapes it carries no secret into the task
    run's state message, its persisted result or the flow's (Prefect formats and stores
    ``str(exc)`` itself, without logging)."""
    try:
        yield
    except Exception as exc:
        scrubbed = scrub(exc)
        if scrubbed is exc:
            raise
        raise scrubbed from None


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__: nothing to show, nothing to leak
        return ""


# --- logging -----------------------------------------------------------------------------

_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Make every log record of this process redacted from its creation on (idempotent).

    Call it once where werft starts (the CLI, a flow run's entry point)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            return redact_record(base(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask secrets in the record's message, traceback and stack, in place.

    The message is formatted here (``msg % args``) and the traceback rendered here, so no
    handler or formatter later sees the raw values; ``exc_info`` is dropped for the
    same reason (formatters use ``exc_text`` when it is set, and a handler that renders
    ``exc_info`` itself would show the unmasked exception and its chained context)."""
    if not _registry:
        return record
    try:
        message = record.getMessage()
    except Exception:
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record
