"""Executors: where the independent tasks of a long run are computed.

A *task* is a small picklable object that names one piece of work by its identity (a
subsampling unit ``(score, policy, trial)``, an expert index) and therefore carries its
own seeds: the task function derives them with :mod:`leanaug.seeding` from that identity,
never from the worker that happens to run it. ``executor.map(fn, tasks, shared=obj)``
calls ``fn(obj, task)`` (``fn(task)`` without ``shared``) once per task and yields the
results as they finish, in any order; callers key results by task identity.

``local``
    In this process (``n_jobs=1``, the default) or in joblib worker processes
    (``n_jobs > 1``; ``-1`` for all cores).
``ray``
    One Ray task per task, on an existing Ray cluster (``address="auto"``,
    ``"HOST:6379"``, ``"ray://HOST:10001"``) or on a local Ray instance with ``num_cpus``
    CPUs. A task whose worker process dies (killed, out of memory, lost node) is run again
    by Ray up to ``max_retries`` times, so task functions must be idempotent: they write
    only atomic files keyed by the task's identity (:mod:`leanaug.results`), and the
    driver de-duplicates by identity. An exception raised by the task itself is not
    retried; a :class:`~leanaug.errors.LeanaugError` reaches the caller as itself.

Ray is an optional dependency (``pip install -e '.[ray]'``) imported only here, only
when the ``ray`` executor is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from leanaug.errors import LeanaugError
from leanaug.progress import Progress
from leanaug.registry import Registry

EXECUTORS: Registry[type[Executor]] = Registry("executor")

RAY_INSTALL_HINT = "install with pip install -e '.[ray]' (or pip install 'ray>=2.9')"


def ray_available() -> bool:
    """Whether ``import ray`` would find Ray (without paying for the import)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None or has no spec: not importable
        return False


def _progress_bar(description: str | None, total: int) -> tuple[Progress, Any]:
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=description is None,
    )
    return bar, bar.add_task(description or "", total=total)


class Executor:
    """Runs ``fn`` over independent tasks; see the module doc. Use as a context manager."""

    name = "executor"

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Iterable[Any],
        *,
        shared: Any = None,
        progress: str | None = None,
        use_gpu: bool = False,
    ) -> Iterator[Any]:
        """Yield ``fn(shared, task)`` (or ``fn(task)``) for every task, as each finishes.

        ``progress``: a description to show a progress bar of finished tasks (``None``:
        no bar, e.g. when the caller draws its own). ``use_gpu``: the tasks can use a GPU
        (the Ray executor then reserves one per task when the cluster has GPUs).
        """
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(fn: Callable[..., Any], has_shared: bool, shared: Any, task: Any) -> Any:
    return fn(shared, task) if has_shared else fn(task)


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """In this process (``n_jobs=1``) or in joblib worker processes (``n_jobs != 1``)."""

    name = "local"

    def __init__(self, n_jobs: int = 1) -> None:
        if n_jobs == 0:
            raise LeanaugError(
                "n_jobs must be a positive number of workers or -1 for all cores, got 0"
            )
        self.n_jobs = int(n_jobs)

    def describe(self) -> str:
        return "local (in this process)" if self.n_jobs == 1 else f"local (n_jobs={self.n_jobs})"

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Iterable[Any],
        *,
        shared: Any = None,
        progress: str | None = None,
        use_gpu: bool = False,
    ) -> Iterator[Any]:
        tasks = list(tasks)
        has_shared = shared is not None
        bar, bar_task = _progress_bar(progress, len(tasks))
        with bar:
            if self.n_jobs == 1:
                results: Iterable[Any] = (_call(fn, has_shared, shared, t) for t in tasks)
            else:
                from joblib import Parallel, delayed

                # joblib memory-maps large numpy arrays in ``shared`` for its workers.
                parallel = Parallel(n_jobs=self.n_jobs, return_as="generator_unordered")
                results = parallel(delayed(_call)(fn, has_shared, shared, t) for t in tasks)
            for result in results:
                bar.advance(bar_task)
                yield result


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """One Ray task per task, on a Ray cluster or a local Ray instance.

    ``address``: ``None`` starts a local instance with ``num_cpus`` CPUs (``None``: all
    cores) and shuts it down on :meth:`close`; otherwise the cluster to join
    (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``; ``num_cpus`` is then the
    cluster's business). When Ray is already initialised in this process it is used as
    it is and left running. ``max_retries``: how often Ray re-runs a task whose worker
    died. ``cpus_per_task``: CPUs Ray reserves for each task.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_retries: int = 3,
        cpus_per_task: float = 1,
    ) -> None:
        try:
            import ray  # noqa: F401 - fail early, before any work, when Ray is missing
        except ImportError:
            raise LeanaugError(
                f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}"
            ) from None
        if num_cpus is not None and num_cpus < 1:
            raise LeanaugError(f"num_cpus of the local Ray instance must be >= 1, got {num_cpus}")
        if max_retries < 0:
            raise LeanaugError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address or None
        self.num_cpus = num_cpus
        self.max_retries = int(max_retries)
        self.cpus_per_task = cpus_per_task
        self._owned = False

    def describe(self) -> str:
        if self.address:
            return f"ray (cluster at {self.address})"
        return f"ray (local instance, {self.num_cpus or 'all'} CPUs)"

    def start(self) -> Any:
        """Connect to (or start) Ray; returns the ``ray`` module. Called by :meth:`map`."""
        import ray

        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = dict(logging_level="warning", include_dashboard=False)
        if self.address is not None:
            _check_reachable(self.address)
        try:
            if self.address is None:
                # "local": always a fresh instance, even when `ray start` runs on this machine.
                ray.init(address="local", num_cpus=self.num_cpus, **kwargs)
            else:
                kwargs.pop("include_dashboard")  # a cluster's dashboard is its own business
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = (
                f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            )
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = (
                " (is `ray start --head` running there? A cluster with token authentication"
                " also needs RAY_AUTH_MODE=token and its token, see README)"
                if self.address
                else ""
            )
            raise LeanaugError(f"could not start or reach {where}: {first}{hint}") from None
        self._owned = True
        return ray

    def cluster_gpus(self) -> float:
        return float(self.start().cluster_resources().get("GPU", 0))

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Iterable[Any],
        *,
        shared: Any = None,
        progress: str | None = None,
        use_gpu: bool = False,
    ) -> Iterator[Any]:
        tasks = list(tasks)
        if not tasks:
            return
        ray = self.start()
        from ray.exceptions import RayError, RayTaskError

        num_gpus = 1 if use_gpu and self.cluster_gpus() >= 1 else 0
        remote = ray.remote(_call).options(
            num_cpus=self.cpus_per_task, num_gpus=num_gpus, max_retries=self.max_retries
        )
        has_shared = shared is not None
        # Shipped once to the object store; Ray hands each task the stored object (numpy
        # arrays zero-copy and read-only).
        shared_ref = ray.put(shared) if has_shared else None
        owner = {remote.remote(fn, has_shared, shared_ref, t): t for t in tasks}
        pending = list(owner)
        bar, bar_task = _progress_bar(progress, len(tasks))
        try:
            with bar:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    for ref in ready:
                        try:
                            result = ray.get(ref)
                        except RayTaskError as exc:
                            cause = getattr(exc, "cause", None)
                            if isinstance(cause, LeanaugError):
                                raise cause from None
                            raise
                        except RayError as exc:  # the worker died max_retries + 1 times, node lost
                            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                            raise LeanaugError(
                                f"Ray task {owner[ref]!r} failed {self.max_retries + 1} times "
                                f"({type(exc).__name__}: {first}); finished tasks are saved, run "
                                "the same command again to resume"
                            ) from None
                        bar.advance(bar_task)
                        yield result
        finally:
            for ref in pending:  # an error or an abandoned generator: stop the rest
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort; the task may just have finished
                    pass


def _check_reachable(address: str) -> None:
    """Fail fast on ``HOST:PORT`` / ``ray://HOST:PORT`` with nothing listening: Ray itself
    keeps retrying such an address for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise LeanaugError(
            f"could not reach the Ray cluster at {address!r}: {exc.strerror or exc} "
            "(is `ray start --head` running there, and the port open?)"
        ) from None


def make_executor(
    name: str | Executor | None = "local",
    *,
    n_jobs: int = 1,
    address: str | None = None,
    max_retries: int = 3,
) -> Executor:
    """The executor called ``name`` (or ``name`` itself when it is one).

    ``n_jobs``: joblib workers of ``local``; the CPUs of a local Ray instance for ``ray``
    without ``address`` (``-1``: all cores). ``address`` is only meaningful for ``ray``.
    """
    if isinstance(name, Executor):
        return name
    name = name or "local"
    cls = EXECUTORS.get(name)
    if address and cls is not RayExecutor:
        raise LeanaugError(f"--ray-address {address} needs --executor ray (got --executor {name})")
    if cls is RayExecutor:
        return RayExecutor(
            address=address, num_cpus=None if n_jobs == -1 else n_jobs, max_retries=max_retries
        )
    return cls(n_jobs=n_jobs)
