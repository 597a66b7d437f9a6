"""MemberPool: the one owner of member actors on Ray, from request to release.

One actor is requested per member, so Ray (and an autoscaler) sees the whole demand, but
members form a queue: each actor that is up and warmed takes the next member, and the next
again when that one finishes, so a queued member does not pay for a new process and a cold
PyTorch. Actors still waiting for resources when the queue runs dry are cancelled.

A member whose actor dies (killed, node lost) goes back to the front of the queue, with a new
actor requested in place of the dead one, and resumes from its newest valid checkpoint, until
`max_restarts` is used up; then it is lost.

An actor on the driver's machine trains in the run directory itself. One elsewhere never
writes there: it trains on its node's own disk, seeded from the run directory when it starts,
and ships each epoch's files with its event (`workers.scratch`); they are written here before
the event is reported. The pool has one handler per thing that can happen: an actor warmed up,
an actor died while starting, a shipment arrived, a member finished, an actor died holding one.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeAlias, Union

import ray

from ensemble.errors import MemberFailed
from ensemble.scheduling import warm_actors
from ensemble.scheduling.placement import Share, lent_threads
from ensemble.scheduling.records import MemberRecord
from ensemble.scheduling.session import driver_node_id, started_on, worker_log_tail
from workers.actor import MemberActor, MemberSpec, torch_threads
from workers.checkpoints import CheckpointError, list_checkpoints, load_checkpoint, load_latest_valid, sweep_temporaries
from workers.events import Event, Lost, Restarted, Shipment
from workers.layout import OUTCOME
from workers.packed import auto_members_per_actor
from workers.scratch import Files, Handoff, checkpoint_entries, machine, receive

EventHandler = Callable[[Event], None]
Actor = ray.actor.ActorHandle
Stream: TypeAlias = ray.ObjectRefGenerator  # a member's events, one per epoch, as the actor yields them
Work = tuple[MemberSpec, ...]     # the members one actor call trains (one, or a pack)


class MemberPool:
    """Trains a phase's members (all members, or the baseline) on warm actors of one `share`."""

    def __init__(self, share: Share, data_ref: ray.ObjectRef, on_event: EventHandler, max_restarts: int = 0,
                 lend_idle_cpus: bool = True, members_per_actor: Union[int, str] = 1, hand_over: bool = False):
        """`hand_over`: the actors left idle at the end stay for the run's next phase (the baseline trains
        on them, `warm_actors.take_hosts`) instead of ending with this one."""
        self._share = share
        self._hand_over = hand_over
        self._hosts: Optional[warm_actors.Hosts] = None       # a larger share's actor made of kept actors
        self._starting: list[Actor] = []                      # started when the queue ran dry, left to the baseline
        self._start_threads: dict[Actor, int] = {}            # actor -> threads to train with from its warm-up
        self._data_ref = data_ref
        self._on_event = on_event
        self._max_restarts = max_restarts
        self._lending = lend_idle_cpus
        self._members_per_actor = members_per_actor
        self._driver = machine(driver_node_id())
        self._queue: deque[MemberSpec] = deque()
        self._warming: dict[ray.ObjectRef, Actor] = {}            # warm-up call -> the actor warming up
        self._streams: dict[Stream, tuple[Work, Actor]] = {}      # event stream -> its members and actor
        self._runs: dict[str, MemberRecord] = {}
        self._placements: dict[Actor, dict] = {}                  # actor -> where it runs (pid, node, device)
        self._phase_start = time.time()
        self._spares = 0                                          # replacements for actors dying before any member
        self._warm_up_spec: Optional[MemberSpec] = None           # the model an actor warms up on when it starts
        self._idle: list[Actor] = []   # actors with nothing left to train, kept so their CPUs go to the last members
        self._threads: dict[Actor, int] = {}                      # actor -> torch threads it was last told to use

    def train(self, specs: Sequence[MemberSpec]) -> dict[str, MemberRecord]:
        """Train every spec to its end (or loss); events reach `on_event` as they happen."""
        self._queue.extend(specs)
        self._runs = {spec.name: MemberRecord() for spec in specs}
        self._phase_start = time.time()
        self._warm_up_spec = specs[0]
        kept = self._take_kept(len(specs))
        self._spares = len(specs) + len(kept)  # a kept actor found dead is replaced without using a spare
        for actor in kept:
            self._warm_up(actor)  # on this run's model and data, as a new actor would
        for _ in specs[len(kept):]:
            self._request_actor()
        finished = False
        try:
            while self._streams or self._warming:
                [ready], _ = ray.wait([*self._warming, *self._streams], num_returns=1)
                if ready in self._warming:
                    self._settle_warm_up(ready)
                else:
                    self._read_stream(ready)
            if self._queue:
                raise RuntimeError(f"no actor could start for {', '.join(s.name for s in self._queue)}: every "
                                   "actor requested for them died while starting; see the Ray logs of the failed "
                                   "workers.")
            finished = True
        finally:
            for actor in [*self._warming.values(), *(actor for _, actor in self._streams.values())]:
                ray.kill(actor)
            if finished and self._keeps_idle():  # for the run's next phase or run (`warm_actors`)
                self._park()
            else:
                for actor in [*self._idle, *self._starting, *(self._hosts.holders if self._hosts else [])]:
                    actor.__ray_terminate__.remote()  # gracefully, so its task events reach the timeline
        return self._runs

    def _take_kept(self, wanted: int) -> list:
        """Actors kept from the run's earlier phase, or an earlier run: of this pool's share, or (for one
        actor) a group of smaller ones on one node whose CPUs it trains with (`warm_actors.take_hosts`)."""
        self._hosts = warm_actors.take_hosts(self._share) if wanted == 1 else None
        if self._hosts is None:
            return warm_actors.take(self._share, wanted)
        self._start_threads[self._hosts.trainer] = torch_threads(self._share.cpus)
        return [self._hosts.trainer]

    def _keeps_idle(self) -> bool:
        return self._hand_over or self._hosts is not None or warm_actors.keeping()

    def _park(self) -> None:
        def node(actor) -> str:
            return self._placements.get(actor, {}).get("node_id", "")
        if self._hosts is None:
            idle = [*self._idle, *self._starting]
            warm_actors.park(self._share, idle, [node(actor) for actor in idle])
        else:  # the group goes back as what it is: actors of the smaller share
            warm_actors.park(self._hosts.share, [*self._idle, *self._hosts.holders],
                             [*map(node, self._idle), *self._hosts.nodes[1:]])

    def _drop_hosts(self) -> None:
        """The actor training on a group's CPUs died: the group's holders end, so that the new actor
        requested in its place can have their CPUs."""
        if self._hosts is not None:
            for holder in self._hosts.holders:
                holder.__ray_terminate__.remote()
            self._hosts = None

    # --- what can happen, one handler each ---

    def on_warmed(self, actor) -> None:
        """An actor is up and warmed: give it the next queued member, or release it. Once the queue
        is empty, the actors still waiting for resources are cancelled."""
        if not self._queue:
            self.on_idle(actor)
            return
        work = tuple(self._queue.popleft() for _ in range(min(self._pack_size(actor), len(self._queue))))
        handoffs = [handoff(spec.directory, self._driver) for spec in work]
        # the call is named after its members, so the dashboard and `ray timeline` show whose work it is
        if len(work) == 1:
            stream = actor.train.options(name=work[0].name).remote(work[0], self._data_ref, handoffs[0])
        else:
            stream = actor.train_pack.options(name="+".join(s.name for s in work)).remote(work, self._data_ref,
                                                                                        handoffs)
        self._streams[stream] = (work, actor)
        if not self._queue:
            self._cancel_waiting()

    def _cancel_waiting(self) -> None:
        """The queue is empty: actors still waiting for resources are cancelled. One already starting on
        a node (it holds its CPUs) is kept when the pool hands over to the baseline, whose group it joins
        (`warm_actors.take_hosts`); the phase does not wait for it."""
        for actor in self._warming.values():
            node = started_on(actor) if self._hand_over else None
            if node is None:
                ray.kill(actor)
            else:
                self._starting.append(actor)
                self._placements[actor] = {"node_id": node}
        self._warming.clear()

    def on_idle(self, actor) -> None:
        """Nothing left to give `actor`. On CPUs it is kept until the phase ends and its CPUs are lent to
        the members still training (their actors use more threads); when the run keeps its actors for
        the next run, it is kept too; else (on GPUs, or once nobody trains) it exits gracefully, freeing
        its resources (ray.kill would drop the task events it still holds, which the dashboard and
        `ray timeline` show)."""
        lend = self._lending and self._share.gpus == 0 and bool(self._streams)
        if lend or self._keeps_idle():
            self._idle.append(actor)
            self._lend_idle_cpus()
        else:
            actor.__ray_terminate__.remote()
    def on_start_failed(self, actor) -> None:
        """An actor died while starting; no member was on it: request another while spares last."""
        ray.kill(actor)
        self._drop_hosts()
        if self._queue and self._spares > 0:
            self._spares -= 1
            self._request_actor()

    def on_shipment(self, work: Work, shipment: Shipment, ref: Optional[ray.ObjectRef] = None) -> None:
        """An event arrived: its files go into the run directory first, then it is recorded and reported.
        A shipment with features stays in the object store, where the combiners' fits read them
        (`scheduling.beside`): the run keeps its reference `ref`, never a copy in the driver."""
        spec = next(spec for spec in work if spec.name == shipment.event.name)
        receive(Path(spec.directory), shipment.files)
        if shipment.features and ref is not None:
            self._runs[spec.name].shipment = ref
        self._report(spec.name, shipment.event)

    def on_member_finished(self, actor) -> None:
        """A member's stream ended (after its Done): the actor takes the next member."""
        self.on_warmed(actor)

    def on_actor_died(self, work: Work, actor, error: Exception) -> None:
        """The actor (or its node) died holding `work`: each of its members unfinished restarts from its
        checkpoint, or is lost once its restarts are used up."""
        ray.kill(actor)
        self._drop_hosts()
        cause = str(error).strip().splitlines()[0][:200]
        last_words = worker_log_tail(self._placements.pop(actor, {}) or self._runs[work[0].name].placement)
        for spec in reversed([spec for spec in work if self._runs[spec.name].outcome is None]):
            run = self._runs[spec.name]
            if should_restart(run.restarts, self._max_restarts):
                run.restarts += 1
                self._queue.appendleft(spec)
                self._report(spec.name, Restarted(spec.name, time.time(), run.restarts, cause, last_words))
            else:
                reason = f"actor died {run.restarts + 1} time(s), restarts used up ({cause})"
                self._report(spec.name, Lost(spec.name, time.time(), reason, last_words))
        if self._queue and self._idle:  # a warm actor with nothing to do takes them at once
            self.on_warmed(self._idle.pop())
            self._lend_idle_cpus()
        elif self._queue:
            self._request_actor()

    # --- Ray plumbing ---

    def _lend_idle_cpus(self) -> None:
        if not self._lending:
            return
        running = [actor for _, actor in self._streams.values()]
        threads = lent_threads(self._share, len(running), len(self._idle))
        for actor in running:
            if self._threads.get(actor) != threads:
                actor.use_threads.remote(threads)  # answered by the actor's second thread
                self._threads[actor] = threads

    def _request_actor(self) -> None:
        share = self._share
        self._warm_up(MemberActor.options(  # type: ignore[attr-defined]  # @ray.remote adds it
        num_cpus=share.cpus, num_gpus=share.gpus).remote(share.cpus))

    def _warm_up(self, actor) -> None:
        call = actor.warm_up.options(name="warm_up").remote(self._warm_up_spec, self._data_ref,
                                                            self._start_threads.get(actor))
        self._warming[call] = actor

    def _settle_warm_up(self, ready: ray.ObjectRef) -> None:
        actor = self._warming.pop(ready)
        try:
            self._placements[actor] = ray.get(ready)
        except ray.exceptions.RayActorError:  # died while starting
            self.on_start_failed(actor)
            return
        except ray.exceptions.RayTaskError as error:  # the model's own code raised on its first batch
            ray.kill(actor)
            assert self._warm_up_spec is not None  # train() sets it before the first actor is requested
            raise member_failed(self._warm_up_spec.name, None, error) from None
        self.on_warmed(actor)

    def _pack_size(self, actor) -> int:
        """Members this actor trains as one computation: the config's number, or for "auto" what was
        measured on the device kind it runs on (see `workers.packed`)."""
        if self._members_per_actor != "auto":
            return int(self._members_per_actor)
        return auto_members_per_actor(self._placements.get(actor, {}).get("device", "cpu"))

    def _read_stream(self, stream) -> None:
        work, actor = self._streams.pop(stream)
        try:
            ref = next(stream)
            shipment = ray.get(ref)  # its arrays are views of the store's copy: not read here
        except StopIteration:
            self.on_member_finished(actor)
            return
        # the actor died, or its node died holding an event not read yet
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            self.on_actor_died(work, actor, error)
            return
        except ray.exceptions.RayTaskError as error:  # the member's own code (or its disk) raised
            ray.kill(actor)  # its stream is no longer tracked, so free its CPUs/GPUs here
            unfinished = [spec.name for spec in work if self._runs[spec.name].outcome is None] or [work[0].name]
            epoch = max((e for e, _, _ in self._runs[unfinished[0]].epoch_spans), default=0) + 1
            raise member_failed(" + ".join(unfinished), epoch, error) from None
        self._streams[stream] = (work, actor)
        self.on_shipment(work, shipment, ref)

    def _report(self, name: str, event: Event) -> None:
        self._runs[name].record(event, self._phase_start)
        self._on_event(event)


def member_failed(name: str, epoch: Optional[int], error: ray.exceptions.RayTaskError) -> MemberFailed:
    """The member's own exception out of Ray's wrapper (which carries its type, errno, file name), with
    the remote traceback kept for ENSEMBLE_DEBUG."""
    cause = getattr(error, "cause", None) or error
    return MemberFailed(name, epoch, cause, getattr(error, "traceback_str", None) or str(error))


def time_actor_start(share: Share, spec: MemberSpec, data_ref: ray.ObjectRef) -> float:
    """Seconds for one actor to start and warm up (process, imports, one thrown-away step)."""
    started = time.perf_counter()
    actor = MemberActor.options(  # type: ignore[attr-defined]  # @ray.remote adds it
        num_cpus=share.cpus, num_gpus=share.gpus).remote(share.cpus)
    ray.get(actor.warm_up.remote(spec, data_ref))
    seconds = time.perf_counter() - started
    ray.kill(actor)
    return seconds


# Pure decisions and the driver's side of node-local storage: tested without a cluster.

def should_restart(restarts_so_far: int, max_restarts: int) -> bool:
    """A member whose actor died is restarted (it resumes from its newest valid checkpoint)
    until it has used up `max_restarts`."""
    return restarts_so_far < max_restarts


def too_few_members(usable: Sequence[str], lost: dict[str, str], min_members: int) -> str | None:
    """Why the run cannot go on, or None: fewer usable members than `min_members`."""
    if len(usable) >= min_members:
        return None
    why = "; ".join(f"{name}: {reason}" for name, reason in lost.items()) or "none lost"
    return (f"only {len(usable)} usable member(s) remain, fewer than min_members={min_members} "
            f"(lost or excluded: {why}). Checkpoints are kept; fix the cause and run "
            "`ensemble run --resume RUN_DIR`.")


def handoff(member_dir: Union[str, Path], driver: str) -> Handoff:
    """Before (re)starting a member: its newest valid checkpoint (or its outcome once finished)
    and a scratch name unique to this run on any node."""
    member_dir = Path(member_dir).absolute()
    key = hashlib.sha256(str(member_dir.parent).encode()).hexdigest()[:10]
    sweep_temporaries(member_dir)  # a driver killed mid-write left these
    files: Files = {}
    if (member_dir / OUTCOME).exists():  # finished: the actor returns the outcome without training
        files[OUTCOME] = (member_dir / OUTCOME).read_bytes()
    else:
        latest, _ = load_latest_valid(member_dir)
        if latest is not None:
            files = {**earlier_checkpoints(member_dir, latest.epoch), **checkpoint_entries(latest.path)}
    return Handoff(driver, f"{member_dir.parent.name}-{key}/{member_dir.name}", files)


def earlier_checkpoints(member_dir: Path, latest: int) -> Files:
    """The valid checkpoints before `latest`: a member restarted on another node trains on from `latest`,
    but when it finishes it encodes the checkpoint its rule selects, which may be older, and epoch 0 for
    the untrained reference (`workers.encoding`). A damaged one stays behind: the driver encodes from
    the run directory what the actor could not, and names the damage as before."""
    files: Files = {}
    for epoch, path in list_checkpoints(member_dir):
        if epoch < latest:
            try:
                load_checkpoint(path)
            except CheckpointError:
                continue
            files.update(checkpoint_entries(path))
    return files
