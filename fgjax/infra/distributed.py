"""Multi-host runs on JAX's own multi-controller runtime (``jax.distributed``).

Every process runs the same command; process 0 hosts the coordinator. fgjax
starts the runtime when asked, by flags of ``fgjax.main`` or by environment:

* explicit: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``
  (or ``FGJAX_COORDINATOR_ADDRESS``, ``FGJAX_NUM_PROCESSES``, ``FGJAX_PROCESS_ID``);
* detected: ``--distributed`` (or ``FGJAX_DISTRIBUTED=1``) alone, on a Cloud TPU
  VM pod slice, under SLURM (``srun``) or Open MPI, where
  ``jax.distributed.initialize()`` reads the cluster from the environment.

Nothing else changes: the mesh spans every device of every process
(``fgjax.infra.parallel``), each process reads its own slice of the global batch
(``fgjax.data.pipeline``), every process takes part in orbax saves and restores.

Failures end in bounded time with one line on every process, never a hang:

* a coordinator that cannot be reached, or processes that never join: the
  runtime's connect cannot be interrupted (at its own deadline it aborts the
  process with a C++ fatal log), so a watchdog thread prints
  ``fgjax: error: ...`` and exits with status 2 at ``timeout_s`` instead;
* processes started with different configs: :func:`check_same_config`
  exchanges a hash of the resolved config through the coordinator's key-value
  store (bounded waits, no device collective) and raises on every process,
  naming the processes and the fields that differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import socket
import sys
import threading
from typing import Any
from typing import Mapping

import ml_collections

from fgjax.errors import DistributedError  # (re-exported: raised here)


ENV_COORDINATOR = "FGJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "FGJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "FGJAX_PROCESS_ID"
ENV_DISTRIBUTED = "FGJAX_DISTRIBUTED"
ENV_TIMEOUT = "FGJAX_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 300  # jax.distributed's own default: pod workers start minutes apart
# Waits on process 0's evaluation (the random-init baseline, the final one): long,
# but a process that dies fails the wait at once (the runtime's heartbeat).
EVALUATION_TIMEOUT_S = 6 * 3600
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_TRUE = ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """The runtime this process joined."""
  process_id: int
  num_processes: int
  timeout_s: float  # bound of every wait on the other processes


_exchange_ids = itertools.count()


def _from_env(environ: Mapping[str, str], name: str, kind: type) -> Any:
  value = environ.get(name, "").strip()
  if not value:
    return None
  try:
    return kind(value)
  except ValueError:
    raise DistributedError(f"environment variable {name}={value!r} is not {kind.__name__}") from None


def split_address(address: str) -> tuple[str, int]:
  """``'host:port'`` (``'[::1]:port'`` for IPv6) -> ``(host, port)``; DistributedError if malformed."""
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise DistributedError(f"coordinator address {address!r} is not HOST:PORT")
  return host, int(port)


def maybe_initialize(*, distributed: bool = False, coordinator_address: str = "", num_processes: int = 0,
                     process_id: int = -1, timeout_s: float = 0,
                     environ: Mapping[str, str] | None = None) -> Cluster | None:
  """Starts ``jax.distributed`` if asked (flags, else environment); None for a single process.

  Must run before JAX creates its backends (before the first ``jax.devices()``).
  Arguments left at their defaults (``''``, 0, -1) are read from the environment
  (``FGJAX_*``, see the module docstring); whatever is still missing is detected
  by JAX (TPU VM, SLURM, Open MPI) when ``distributed`` is set.

  Args:
    timeout_s: bound of the wait for the coordinator and for every process to
      join (0: ``FGJAX_DISTRIBUTED_TIMEOUT`` or 300 s).

  Raises:
    DistributedError: bad or missing settings, or a coordinator that cannot
      start (e.g. its port is taken). A coordinator that cannot be reached
      ends the process (see the module docstring).
  """
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get(ENV_COORDINATOR, "").strip()
  count = num_processes or _from_env(environ, ENV_NUM_PROCESSES, int)
  index = process_id if process_id >= 0 else _from_env(environ, ENV_PROCESS_ID, int)
  detect = distributed or environ.get(ENV_DISTRIBUTED, "").strip().lower() in _TRUE
  timeout_s = timeout_s or _from_env(environ, ENV_TIMEOUT, float) or DEFAULT_TIMEOUT_S
  if not (address or count or index is not None or detect):
    return None
  if not detect and not (address and count and index is not None):
    unset = {"--coordinator_address": not address, "--num_processes": not count, "--process_id": index is None}
    missing = ", ".join(name for name, is_unset in unset.items() if is_unset)
    raise DistributedError(f"a multi-process run needs --coordinator_address, --num_processes and "
                           f"--process_id (or --distributed to detect them on a TPU pod or SLURM); "
                           f"missing: {missing}")
  if count is not None and count < 1:
    raise DistributedError(f"--num_processes must be >= 1, got {count}")
  if index is not None and count and not 0 <= index < count:
    raise DistributedError(f"--process_id must be in [0, {count}), got {index}")
  bind_address = None
  if address:
    host, port = split_address(address)
    if host in LOOPBACK_HOSTS:
      bind_address = address  # a rehearsal on one machine listens on loopback only
    if index == 0:
      _check_port_free(host if host in LOOPBACK_HOSTS else "", port, address)

  import jax  # here, so that this module can be imported (and its errors tested) cheaply
  _orbax_uses_coordinator_barriers()
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process collectives
  watchdog = _Watchdog(timeout_s, address, count, index)
  try:
    jax.distributed.initialize(
        coordinator_address=address or None, num_processes=count, process_id=index,
        # The watchdog ends the wait first, with a readable line (see module docstring).
        initialization_timeout=int(timeout_s) + 30, coordinator_bind_address=bind_address)
  except (ValueError, TypeError) as e:  # JAX found no cluster to detect the missing values from
    raise DistributedError(f"cannot start the multi-process runtime: {e} (no TPU pod, SLURM or MPI "
                           "environment detected: pass --coordinator_address, --num_processes, "
                           "--process_id)") from None
  except RuntimeError as e:  # e.g. "Failed to start RPC server": the coordinator's port is taken
    cause = " ".join(str(e).split())
    raise DistributedError(f"cannot start the coordinator at {address or '(detected)'}: {cause}") from None
  finally:
    watchdog.stop()
  return Cluster(process_id=jax.process_index(), num_processes=jax.process_count(), timeout_s=timeout_s)


def _orbax_uses_coordinator_barriers() -> None:
  """orbax syncs processes with the coordinator's barriers, not device collectives.

  Its default (``sync_global_devices``) is a gloo allgather on CPU, subject to
  the 30 s rendezvous limit (see :func:`barrier`). The switch is orbax's absl
  flag, readable once flags are parsed (``fgjax.main``); library callers that
  do not parse absl flags keep orbax's default.
  """
  from absl import flags
  importlib.import_module("orbax.checkpoint")  # defines the flag
  if "experimental_orbax_use_distributed_barrier" in flags.FLAGS:
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def _check_port_free(host: str, port: int, address: str) -> None:
  """Process 0 hosts the coordinator: a taken port is named now, not as a failed RPC server."""
  with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a TIME_WAIT port is free
    try:
      probe.bind((host.strip("[]"), port))
    except OSError as e:
      raise DistributedError(f"process 0 cannot host the coordinator at {address}: port {port} "
                             f"is not free here ({e.strerror or e}); pick another port") from None


class _Watchdog:
  """Ends a process whose ``jax.distributed.initialize`` outlives ``timeout_s``.

  JAX's connect blocks in C++ and, at its deadline, aborts the process with a
  fatal log; this prints one line naming the likely cause and exits with 2.
  """

  def __init__(self, timeout_s: float, address: str, num_processes: int | None, process_id: int | None):
    self._done = threading.Event()
    self._args = (timeout_s, address, num_processes, process_id)
    self._thread = threading.Thread(target=self._run, name="fgjax-distributed-watchdog", daemon=True)
    self._thread.start()

  def stop(self) -> None:
    self._done.set()

  def _run(self) -> None:
    timeout_s, address, count, index = self._args
    if self._done.wait(timeout_s):
      return
    who = f"process {index} of {count}" if index is not None and count else "this process"
    if address and index != 0 and not _reachable(address):
      cause = (f"cannot reach the coordinator at {address} within {timeout_s:g} s: process 0 must "
               "be running and that address must be reachable from here")
    else:
      cause = (f"not all {count or 'the'} processes joined the coordinator at "
               f"{address or '(detected)'} within {timeout_s:g} s: start the same command on every "
               "process, each with its own --process_id")
    sys.stdout.flush()
    sys.stderr.write(f"fgjax: error: {who}: {cause}\n")
    sys.stderr.flush()
    os._exit(2)


def _reachable(address: str) -> bool:
  host, port = split_address(address)
  try:
    with socket.create_connection((host.strip("[]"), port), timeout=2):
      return True
  except OSError:
    return False


# ----------------------------------------------------------------------------
# After initialisation: the processes must agree.


def config_fingerprint(cfg: ml_collections.ConfigDict, workdir: str = "") -> tuple[str, str]:
  """``(sha256 hex, canonical JSON)`` of the resolved config and the workdir."""
  text = json.dumps({"config": json.loads(cfg.to_json_best_effort(sort_keys=True)), "workdir": workdir},
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest(), text


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
  return out


def config_differences(text_a: str, text_b: str, *, limit: int = 3) -> str:
  """The first ``limit`` differing fields of two fingerprint JSONs: ``'data.x (8 vs 16)'``."""
  a, b = _flat(json.loads(text_a)), _flat(json.loads(text_b))
  keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
  shown = [f"{k.removeprefix('config.')} ({a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r})"
           for k in keys[:limit]]
  return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _client() -> Any:
  from jax._src import distributed as jax_distributed  # the runtime's key-value store (as orbax uses it)
  if jax_distributed.global_state.client is None:
    raise DistributedError("the multi-process runtime is not initialised")
  return jax_distributed.global_state.client


def exchange(name: str, value: str, *, timeout_s: float) -> list[str]:
  """Every process's ``value``, in process order, through the coordinator (bounded waits).

  Raises:
    DistributedError: a process did not post its value within ``timeout_s``.
  """
  import jax
  client = _client()
  key = f"fgjax/{name}/{next(_exchange_ids)}"
  client.key_value_set(f"{key}/{jax.process_index()}", value)
  values = []
  for i in range(jax.process_count()):
    try:
      values.append(client.blocking_key_value_get(f"{key}/{i}", int(timeout_s * 1000)))
    except Exception:  # the runtime's deadline error (a JaxRuntimeError)
      raise DistributedError(f"process {i} did not report its {name} within {timeout_s:g} s "
                             "(did it fail? see its log)") from None
  return values


def barrier(name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Waits until every process reaches ``barrier(name)`` (no-op for one process).

  A coordinator barrier, not a device collective: CPU (gloo) collectives give
  up when the processes reach their first collective more than 30 s apart
  (a fixed rendezvous timeout, not ``xla_cpu_collective_timeout_seconds``),
  which compilation on a loaded machine or process 0's evaluation easily
  exceeds. (Compilation differs even for one program: the persistent cache
  keys it differently on each process and only process 0 writes it, so
  process 0 loads what the others compile; hence ``parallel.precompile``
  before this barrier.) If a process dies, the runtime fails the barrier on
  the others.

  Raises:
    DistributedError: not every process arrived within ``timeout_s``.
  """
  import jax
  if jax.process_count() == 1:
    return
  try:
    _client().wait_at_barrier(f"fgjax/{name}/{next(_exchange_ids)}", int(timeout_s * 1000))
  except DistributedError:
    raise
  except Exception as e:  # the runtime's deadline error (a JaxRuntimeError)
    cause = " ".join(str(e).split())[:200]
    raise DistributedError(f"not every process reached {name!r} within {timeout_s:g} s ({cause})") from None


def check_same_config(cfg: ml_collections.ConfigDict, *, workdir: str = "",
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Raises on every process unless all processes run the same config and workdir.

  A mismatch (another ``--config`` override on one worker, a stale checkout)
  would otherwise train silently on inconsistent batches or hang in a
  collective of another shape.
  """
  import jax
  if jax.process_count() == 1:
    return
  digest, text = config_fingerprint(cfg, workdir)
  digests = exchange("config_hash", digest, timeout_s=timeout_s)
  if len(set(digests)) == 1:
    return
  texts = exchange("config", text, timeout_s=timeout_s)
  differing = [i for i, d in enumerate(digests) if d != digests[0]]
  first = differing[0]
  raise DistributedError(
      f"the processes run different configs: process(es) {', '.join(map(str, differing))} differ from "
      f"process 0 (config hash {digests[first][:12]} vs {digests[0][:12]}); process {first} vs 0: "
      f"{config_differences(texts[first], texts[0])}. Run the same command on every process")


def process_label(cluster: Cluster | None) -> str:
  """``'process 1 of 4: '`` in a multi-process run, else ``''`` (prefix of error lines)."""
  if cluster is None or cluster.num_processes == 1:
    return ""
  return f"process {cluster.process_id} of {cluster.num_processes}: "
