"""What werft did to a machine, remembered where every run and every worker sees it.

Two records per machine, kept in the secret store's backend (DESIGN.md: generated state
lives in a store every worker sees -- ``$WERFT_HOME/secrets`` by default, the SQL store
when ``WERFT_STORE_URL`` is set) under ``machines/<machine>/``:

``last-reset``  the last reset werft sent the machine: its type, when (wall clock, so
                another process can compare), and whether werft has since seen it take
                effect. Written *before* the request goes out: a reset whose answer was
                lost may still have been applied, and a second one within the settle time
                would restart a machine in the middle of its POST.
``joined``      the machine's Node registered with its cluster and werft released it: the
                seed it was installed from. This is werft's evidence, recorded when it saw
                it, that the machine holds an installed OS -- what lets a later run power it
                back on from its disk when the cluster's API cannot answer (a power cut of a
                single-node site), even after ``release`` ejected the media. An install
                that werft starts (``ensure``) forgets it.

They live in the secret store, the one every run and worker shares (the cluster CAs are
there), but are read and written through its backend directly rather than as secrets:
they carry nothing secret, and everything ``SecretStore.get`` hands out is registered
for redaction -- thousands of changing records would only bloat that. Writes are atomic
(a crash never leaves half a record). Machine names are unique across an inventory, so
they key the records.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, replace

from werft.secrets import SecretStore

log = logging.getLogger(__name__)

PREFIX = "machines"  # in the secret store: machines/<machine>/<record>
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Real servers spend minutes in POST (memory training, option ROMs) before they boot the
# installer; a second reset inside this window restarts them mid-POST.
DEFAULT_SETTLE = 600.0
RESTART_TYPES = frozenset({"ForceRestart", "GracefulRestart", "PowerCycle"})
ON_TYPES = frozenset({"On", "ForceOn"})


@dataclass(frozen=True)
class ResetRecord:
    """One reset werft sent (or was about to send) a machine."""

    reset_type: str  # as Redfish names it: On, ForceRestart, ...; "start" for a VM
    at: float  # time.time() when werft decided to send it
    seen: bool = False  # werft has since seen it take effect (the machine came on)
    # The BMC's own LastResetTime before werft sent it, where the BMC reports one: a
    # different value later means the BMC applied a reset since (compared as the BMC's
    # text, never against werft's clock: BMC clocks drift by minutes).
    bmc_before: str | None = None

    def applied_by_bmc(self, last_reset_time: str | None) -> bool:
        return (
            self.bmc_before is not None
            and last_reset_time is not None
            and last_reset_time != self.bmc_before
        )

    @property
    def powers_on(self) -> bool:
        return self.reset_type in ON_TYPES or self.reset_type in RESTART_TYPES


@dataclass(frozen=True)
class JoinedRecord:
    """The machine joined its cluster (werft saw the Node) and was released."""

    seed: str  # the seed URL it was installed from (and held when released)
    at: float


class MachineRecords:
    """Reset and join records of machines; ``settle`` seconds is how long a reset werft
    sent keeps any other reset away from the machine (see ``may_reset``)."""

    def __init__(self, store: SecretStore | None, *, settle: float = DEFAULT_SETTLE) -> None:
        self._store = store
        self.settle = settle

    # --- resets ---------------------------------------------------------------------------

    def last_reset(self, machine: str) -> ResetRecord | None:
        raw = self._read(machine, "last-reset")
        if raw is None:
            return None
        before = raw.get("bmc_before")
        try:
            return ResetRecord(
                str(raw["reset_type"]),
                float(raw["at"]),  # type: ignore[arg-type]
                bool(raw.get("seen")),
                str(before) if before is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def record_reset(
        self, machine: str, reset_type: str, *, bmc_before: str | None = None
    ) -> ResetRecord | None:
        """Remember a reset about to be sent (``bmc_before``: the BMC's LastResetTime
        now); returns the record it replaces (for ``undo_reset``)."""
        previous = self.last_reset(machine)
        record = ResetRecord(reset_type, time.time(), bmc_before=bmc_before)
        self._write(machine, "last-reset", asdict(record))
        return previous

    def undo_reset(self, machine: str, previous: ResetRecord | None) -> None:
        """The BMC refused the reset with an error response: it was not applied, so it
        must not keep the next one away."""
        if previous is not None:
            self._write(machine, "last-reset", asdict(previous))
        else:
            self._delete(machine, "last-reset")

    def saw_power_on(self, machine: str) -> None:
        """The machine reports power on: a pending reset took effect. Cheap when nothing is
        pending (one small read)."""
        record = self.last_reset(machine)
        if record is not None and not record.seen and record.powers_on:
            self._write(machine, "last-reset", asdict(replace(record, seen=True)))

    def settling(self, machine: str, *, now: float | None = None) -> ResetRecord | None:
        """The reset werft sent within the settle time, if any."""
        record = self.last_reset(machine)
        if record is None:
            return None
        age = (time.time() if now is None else now) - record.at
        return record if 0 <= age < self.settle else None

    def may_reset(self, machine: str, *, powered_on: bool, powering: bool = False) -> bool:
        """Whether werft may send ``machine`` a reset now, given what its BMC shows.

        Within the settle time of werft's last reset: never while the machine is on (it is
        in POST or installing: the reset did its job), never while it is off or powering
        on without werft having seen that reset take effect (the power change is still on
        its way: BMCs apply them seconds later, sushy-tools up to 11 s). Only a machine
        that came on after werft's reset and is off again (someone powered it off since)
        may be powered on again at once.
        """
        record = self.settling(machine)
        if record is None:
            return True
        if powered_on or powering:
            return False
        return record.seen

    # --- joins ----------------------------------------------------------------------------

    def joined(self, machine: str) -> JoinedRecord | None:
        raw = self._read(machine, "joined")
        if raw is None:
            return None
        try:
            return JoinedRecord(str(raw["seed"]), float(raw["at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def record_joined(self, machine: str, seed: str) -> None:
        current = self.joined(machine)
        if current is not None and current.seed == seed:
            return  # a re-run of release: nothing new to remember
        self._write(machine, "joined", asdict(JoinedRecord(seed, time.time())))

    def forget_joined(self, machine: str) -> None:
        self._delete(machine, "joined")

    # --- storage --------------------------------------------------------------------------

    def _name(self, machine: str, what: str) -> str | None:
        if self._store is None:
            return None
        if not _NAME.fullmatch(machine):
            raise ValueError(f"invalid machine name {machine!r}")
        return f"{PREFIX}/{machine}/{what}"

    def _read(self, machine: str, what: str) -> dict[str, object] | None:
        name = self._name(machine, what)
        if name is None or self._store is None:
            return None
        try:
            raw = self._store.backend.get(name)  # not SecretStore.get: nothing to redact
            value = json.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            log.warning("machine %s: unreadable %s record; ignoring it", machine, what)
            return None
        return value if isinstance(value, dict) else None

    def _write(self, machine: str, what: str, value: dict[str, object]) -> None:
        name = self._name(machine, what)
        if name is not None and self._store is not None:
            self._store.backend.put(name, json.dumps(value, sort_keys=True).encode())

    def _delete(self, machine: str, what: str) -> None:
        name = self._name(machine, what)
        if name is not None and self._store is not None:
            self._store.backend.delete(name)
