"""Edge sites from CSV: read with pandas, checked a column at a time.

10,000 edge sites must validate in well under a second, so nothing here loops over rows
in Python to *check* them:

- one regular expression for a whole well-formed row runs over the file text in C
  (``re.subn`` counts the rows it matches). When every row matches -- the normal case --
  the per-cell syntax rules and length limits all hold and are skipped;
- otherwise each rule is one vectorised operation over a column (``str.fullmatch``,
  ``isin`` over the column's distinct values, ``to_numeric`` + ``between``), and only the
  rows a rule rejects are turned into Problems.

Ranges (latitude, longitude) and cross-row rules (duplicates, references, allowed versions)
are always checked column-wise. Row numbers are file lines: the header is line 1, the first
row line 2 (blank lines are kept as rows so the numbering stays true; a quoted cell spanning
lines would shift it, and no valid cell contains a newline).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from werft.errors import Problem
from werft.inventory.model import DNS_NAME_MAX, TEXT_MAX, URL_MAX
from werft.inventory.rules import (
    BMC_ADDRESS_RE,
    FIX_LATITUDE,
    FIX_LITERAL_SECRET,
    FIX_LONGITUDE,
    FIX_MAC,
    FIX_NAME,
    FIX_SECRET_REF,
    FIX_VERSION,
    MAC_RE,
    NAME_RE,
    SECRET_REF_RE,
    URL_PASSWORD_RE,
    VERSION_RE,
    bmc_address_problem,
    too_long,
)

COLUMNS = (
    "site",
    "region",
    "latitude",
    "longitude",
    "profile",
    "kubernetes_version",
    "bmc_address",
    "bmc_credentials",
    "boot_mac",
    "owner",
)
# Cells that may be left empty: the version then comes from the profile or fleet defaults.
OPTIONAL = frozenset({"kubernetes_version", "owner"})
# The longest value each column may hold, as for the same fields in YAML. A longer cell is
# reported by its length (never echoed) and its row is left out of every other check.
CELL_MAX = {
    "site": DNS_NAME_MAX,
    "region": DNS_NAME_MAX,
    "latitude": 32,
    "longitude": 32,
    "profile": DNS_NAME_MAX,
    "kubernetes_version": DNS_NAME_MAX,
    "bmc_address": URL_MAX,
    "bmc_credentials": DNS_NAME_MAX,
    "boot_mac": DNS_NAME_MAX,
    "owner": TEXT_MAX,
}
FIRST_ROW_LINE = 2  # the header is line 1


# The regex of one cell of a well-formed row, per column (the fast path above). Each is
# at least as strict as the column's own rules below, within the column's length limit
# (names, MACs and refs by their pattern, the others by explicit bounds), and none can
# match a comma, so a row with the header's number of fields matches only cell by cell.
_CELL = {
    "site": NAME_RE,
    "region": NAME_RE,
    "profile": NAME_RE,
    "latitude": r"-?\d{1,3}(?:\.\d{1,27})?",
    "longitude": r"-?\d{1,3}(?:\.\d{1,27})?",
    "kubernetes_version": r"(?:v?\d{1,20}\.\d{1,20}\.\d{1,20})?",
    # a URL has no simple length-bounded shape: a lookahead holds it to its limit
    "bmc_address": f"(?=[^,\\r\\n]{{0,{CELL_MAX['bmc_address']}}}(?:,|\\r?$))"
    + BMC_ADDRESS_RE.replace("#@]", "#@,]"),
    "bmc_credentials": SECRET_REF_RE,
    "boot_mac": MAC_RE,
    "owner": r"(?![A-Za-z][A-Za-z0-9+.-]*://[^/@\s:,]+:[^/@\s,]*@)"
    + rf"[^,\r\n\"]{{0,{CELL_MAX['owner']}}}",
}


def _row_pattern(header: list[str]) -> re.Pattern[str]:
    cells = ",".join(f"(?:{_CELL[name]})" for name in header)
    return re.compile(f"^{cells}\r?$", re.MULTILINE)


@dataclass
class EdgeTable:
    """The rows of one edge CSV that are not empty. ``frame.index`` is the 0-based row."""

    rel: str
    file: str
    frame: pd.DataFrame
    # latitude/longitude as floats (NaN where not a number), computed once by the checks
    latitude: pd.Series | None = None
    longitude: pd.Series | None = None

    def lines(self, positions: np.ndarray | None = None) -> np.ndarray:
        index = self.frame.index.to_numpy()
        return (index if positions is None else index[positions]) + FIRST_ROW_LINE

    def report(
        self,
        problems: list[Problem],
        mask: pd.Series | np.ndarray,
        column: str,
        message: Callable[[str], str],
        fix: str | Callable[[str], str],
        field: str | None = None,
    ) -> None:
        """One Problem per row where ``mask`` is True; only those rows are touched.

        ``message`` and ``fix`` see the row's value in ``column``; the Problem names
        ``field`` (default: the column).
        """
        positions = np.flatnonzero(np.asarray(mask))
        if positions.size == 0:
            return
        values = self.frame[column].to_numpy()[positions]
        for line, value in zip(self.lines(positions).tolist(), values.tolist(), strict=True):
            text_fix = fix(value) if callable(fix) else fix
            problems.append(
                Problem(self.file, int(line), field or column, message(value), text_fix)
            )


def read_edge_csv(rel: str, file: str, data: bytes) -> tuple[EdgeTable | None, list[Problem]]:
    """Parse and check one edge CSV on its own (references are checked with the fleet)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, _encoding_problems(file, data)
    header = _header(text)
    if header is None:
        return None, [
            Problem(
                file,
                1,
                "header",
                "the file is empty",
                "start with the header line: " + ",".join(COLUMNS),
            )
        ]
    problems = _column_problems(file, header)
    if problems:
        return None, problems
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            low_memory=False,
        )
    except pd.errors.ParserError:
        return None, _field_count_problems(file, text, len(header))
    frame.columns = [c.strip() for c in frame.columns]
    table = EdgeTable(rel, file, frame)
    well_formed = _row_pattern(header).subn("", text)[1] == len(frame)
    if not well_formed:
        over = check_lengths(table, problems)
        if over.any():
            table.frame = frame = frame[~over]
        empty = (frame == "").all(axis=1)
        if empty.any():
            table.report(
                problems,
                empty,
                "site",
                lambda _: "empty row",
                "delete the empty line or fill in the row",
                field="row",
            )
            table.frame = frame = frame[~empty]
        problems += check_syntax(table)
    problems += check_ranges(table)
    return table, problems


def _encoding_problems(file: str, data: bytes) -> list[Problem]:
    """Every line that is not UTF-8 (up to 100): the error path, so line by line is fine."""
    problems = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line[exc.start : exc.start + 1].hex()
            problems.append(
                Problem(
                    file,
                    number,
                    "encoding",
                    f"not UTF-8 (byte 0x{bad} at column {exc.start + 1})",
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                )
            )
            if len(problems) >= 100:
                break
    return problems


def _header(text: str) -> list[str] | None:
    first = text.split("\n", 1)[0].strip("\r")
    if not first.strip():
        return None
    return [c.strip() for c in next(csv.reader([first]))]


def _column_problems(file: str, header: list[str]) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(
                Problem(file, 1, name, f"column {name!r} appears twice", "keep one of them")
            )
        seen.add(name)
    for name in COLUMNS:
        if name not in seen:
            problems.append(
                Problem(
                    file,
                    1,
                    name,
                    f"missing column {name!r}",
                    "the header must be: " + ",".join(COLUMNS),
                )
            )
    for name in header:
        if name not in COLUMNS:
            if name == "":
                message = "a column has no name (a trailing comma in the header?)"
            else:
                message = f"unknown column {name!r}"
            problems.append(
                Problem(
                    file,
                    1,
                    name or "header",
                    message,
                    "remove it; the columns are: " + ",".join(COLUMNS),
                )
            )
    return problems


def _field_count_problems(file: str, text: str, expected: int) -> list[Problem]:
    """pandas stops at the first ragged row; the csv module finds them all (error path)."""
    problems = []
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    for row in reader:
        if len(row) > expected:
            problems.append(
                Problem(
                    file,
                    reader.line_num,
                    "row",
                    f"{len(row)} fields, but the header has {expected}",
                    "remove the extra commas (quote a value that contains a comma)",
                )
            )
    return problems or [Problem(file, None, "row", "the CSV cannot be parsed", "")]


def check_lengths(table: EdgeTable, problems: list[Problem]) -> np.ndarray:
    """Report every cell longer than its column's limit; the rows holding one, as a mask."""
    over = np.zeros(len(table.frame), dtype=bool)
    for column, limit in CELL_MAX.items():
        lengths = table.frame[column].str.len().to_numpy()
        long_cells = lengths > limit
        if long_cells.any():
            table.report(
                problems,
                long_cells,
                column,
                lambda v, c=column, n=limit: too_long(c, len(v), n)[0],
                lambda v, n=limit: too_long("", len(v), n)[1],
            )
            over |= long_cells
    return over


def _bad_values(values: pd.Series, regex: str) -> pd.Series:
    """Rows whose non-empty value does not match; the regex runs once per distinct value."""
    distinct = pd.Series(values.unique())
    bad = distinct[(distinct != "") & ~distinct.str.fullmatch(regex)]
    return values.isin(bad)


def check_ranges(table: EdgeTable) -> list[Problem]:
    """Latitude and longitude are numbers within range (always checked)."""
    problems: list[Problem] = []
    frame = table.frame
    for column, low, high, fix in (
        ("latitude", -90.0, 90.0, FIX_LATITUDE),
        ("longitude", -180.0, 180.0, FIX_LONGITUDE),
    ):
        number = pd.to_numeric(frame[column], errors="coerce")
        setattr(table, column, number)
        bad = (frame[column] != "") & ~number.between(low, high)
        table.report(problems, bad, column, lambda v, c=column: f"{v!r} is not a {c}", fix)
    return problems


def check_syntax(table: EdgeTable) -> list[Problem]:
    """Every per-cell syntax rule, one vectorised pass per column (the slow path)."""
    problems: list[Problem] = []
    frame = table.frame
    for column in COLUMNS:
        if column not in OPTIONAL:
            table.report(
                problems,
                frame[column] == "",
                column,
                lambda _, c=column: f"{c} is empty",
                f"fill in {column}",
            )

    def pattern(column: str, regex: str, what: str, fix: str) -> None:
        bad = _bad_values(frame[column], regex)
        table.report(problems, bad, column, lambda v: f"{v!r} is not {what}", fix)

    pattern("site", NAME_RE, "a DNS-1123 label", FIX_NAME)
    pattern("region", NAME_RE, "a DNS-1123 label", FIX_NAME)
    pattern("profile", NAME_RE, "a DNS-1123 label", FIX_NAME)
    pattern("boot_mac", MAC_RE, "a MAC address", FIX_MAC)
    pattern("kubernetes_version", VERSION_RE, "a Kubernetes version", FIX_VERSION)

    address = frame["bmc_address"]
    bad = _bad_values(address, BMC_ADDRESS_RE)
    table.report(
        problems,
        bad,
        "bmc_address",
        lambda v: (bmc_address_problem(v) or ("invalid BMC address", ""))[0],
        lambda v: (bmc_address_problem(v) or ("", ""))[1],
    )

    refs = frame["bmc_credentials"]
    literal = refs.str.contains(":", regex=False)
    table.report(
        problems,
        literal,
        "bmc_credentials",
        lambda _: "looks like 'user:password', a literal credential",
        FIX_LITERAL_SECRET,
    )
    bad = ~literal & _bad_values(refs, SECRET_REF_RE)
    # The bad value is not echoed: a malformed "reference" may well be the password itself.
    table.report(
        problems, bad, "bmc_credentials", lambda _: "is not a secret reference name", FIX_SECRET_REF
    )

    owner = frame["owner"]
    leaked = owner.str.fullmatch(URL_PASSWORD_RE)
    table.report(
        problems,
        leaked,
        "owner",
        lambda _: "has credentials written into a URL",
        FIX_LITERAL_SECRET,
    )
    return problems
