"""``WorkflowBuilder``: declare executors and edges, then ``build()``.

Executors are registered in the order they are first mentioned (the start
executor first); that order is the schedule order of every superstep. Edges
may name executors by instance or by id. ``build()`` validates the whole graph
and raises ``WorkflowDefinitionError`` naming the executor, edge or type at
fault; it never mutates the objects it was given.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from ._checkpoint import CheckpointStore, TypeRegistry
from ._core import (
    Breakpoints,
    DirectEdge,
    EdgeGroup,
    FanInEdge,
    FanOutEdge,
    Graph,
    MultiSelectEdge,
    Node,
    SwitchEdge,
    may_overlap,
    type_name,
)
from ._edges import Case, Default
from ._exceptions import WorkflowDefinitionError
from ._executor import Executor, check_id, check_whole
from ._factories import Factory, make_executor, per_run_invoke, registered
from ._handlers import union_of
from ._maps import MapExecutor, Worker, map_worker
from ._persistence import CheckpointConfig, RunCodec, graph_signature
from ._subworkflow import WorkflowExecutor, check_tree
from ._workflow import Workflow, as_config, known_ids

__all__ = ["WorkflowBuilder"]

ExecutorRef = Executor | str
Predicate = Callable[[Any], bool | Awaitable[bool]]
Selector = Callable[[Any, list[str]], Sequence[str] | Awaitable[Sequence[str]]]


@dataclass(frozen=True, slots=True)
class _Draft:
    """An edge group as declared, before ids are resolved."""

    kind: type[EdgeGroup]
    sources: tuple[ExecutorRef, ...]
    targets: tuple[ExecutorRef, ...]
    condition: Predicate | None = None
    cases: tuple[Predicate, ...] = ()  # switch: one predicate per case target
    default: ExecutorRef | None = None
    selector: Selector | None = None


def _ref_name(ref: ExecutorRef) -> str:
    return ref if isinstance(ref, str) else getattr(ref, "id", repr(ref))


def _instances(worker: Executor, where: str) -> dict[int, str]:
    """The executor instances a map's worker uses (by ``id()``), and where:
    itself, and the shared ones of the sub-workflow it runs, however deep —
    through the child's own maps, and through its registered factories when
    each one they make wraps the same workflow. Stateless ones (``@executor``
    functions) serve anywhere at once."""
    found = {} if worker.stateless else {id(worker): where}
    if isinstance(worker, MapExecutor):  # (its items' workers: the prototype's)
        found.update(_instances(worker.worker, where))
    child = getattr(worker, "workflow", None)
    if not isinstance(child, Workflow):
        return found
    for executor in child.shared_instances:
        found.update(_instances(executor, f"{where}/{executor.id}"))
    for eid, executor in child.executors.items():
        inner = f"{where}/{eid}"
        if isinstance(executor, MapExecutor) and executor.stateless:  # (not shared: above)
            found.update(_instances(executor.worker, inner))
        make = child.codec.factories.get(eid)
        once = None if make is None else _wrapped_always(make, eid, executor)
        if once is not None:
            for shared in once.shared_instances:
                found.update(_instances(shared, f"{inner}/{shared.id}"))
    return found


def _wrapped_always(make: Callable[[], Executor], eid: str, made: Executor) -> Workflow | None:
    """The sub-workflow that ``made`` (made by the factory ``make``) runs,
    if the factory's executors all run that same workflow object — rather
    than one built at each call."""
    wrapped = getattr(made, "workflow", None)
    if not isinstance(wrapped, Workflow):
        return None
    again = make_executor(make, eid)  # (one more, as each run would make)
    return wrapped if getattr(again, "workflow", None) is wrapped else None


class WorkflowBuilder:
    """Build a workflow::

    workflow = (
        WorkflowBuilder(start=Upper(id="upper"), name="demo")
        .add_edge("upper", reverse)
        .build()
    )
    """

    def __init__(
        self,
        start: ExecutorRef,
        *,
        name: str | None = None,
        max_supersteps: int = 100,
        strict: bool = False,
        output_from: Iterable[ExecutorRef] | None = None,
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
        checkpoint_types: Iterable[Any] = (),
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        interrupt_before: Iterable[ExecutorRef] = (),
        interrupt_after: Iterable[ExecutorRef] = (),
    ) -> None:
        if not isinstance(start, (Executor, str)):
            raise WorkflowDefinitionError(
                f"start must be an Executor or the id of one registered with register(), "
                f"got {type(start).__name__}"
            )
        if (
            not isinstance(max_supersteps, int)
            or isinstance(max_supersteps, bool)
            or max_supersteps < 1
        ):
            raise WorkflowDefinitionError(
                f"max_supersteps must be a positive int, got {max_supersteps!r}"
            )
        if name is not None and not isinstance(name, str):
            raise WorkflowDefinitionError(f"name must be a str, got {name!r}")
        if name is not None:
            check_whole(name, "name", other="name")
        self._name = name if name is not None else "workflow"
        self._max_supersteps = max_supersteps
        self._strict = strict
        self._output_from = None if output_from is None else tuple(output_from)
        self._checkpoints = as_config(checkpoints, WorkflowDefinitionError)
        self._checkpoint_types = tuple(checkpoint_types)
        self._reducers = _checked_reducers(reducers)
        self._breakpoints = (_as_refs(interrupt_before), _as_refs(interrupt_after))
        self._registered: dict[str, Executor] = {}
        self._factories: dict[str, Callable[[], Executor]] = {}
        self._clashes: list[tuple[Executor, Executor]] = []
        self._drafts: list[_Draft] = []
        if isinstance(start, Executor):
            self.add_executor(start)
        self._start = _ref_name(start)

    # -- declaring -----------------------------------------------------------

    def add_executor(self, *executors: Executor) -> WorkflowBuilder:
        """Register executors now (fixing their schedule position) without edges."""
        for executor in executors:
            self._register(executor)
        return self

    def register(self, id: str, factory: Factory) -> WorkflowBuilder:
        """Register a per-run executor: ``factory`` is an ``Executor`` subclass
        (called with ``id``) or a function returning a new executor with that
        id. Each run gets its own instance, made when the run first delivers to
        it; use ``id`` in edges (and as ``start``) like any executor. A workflow
        of registered executors and ``@executor`` functions runs any number of
        times at once."""
        if id in self._registered:
            raise WorkflowDefinitionError(f"executor id {id!r} is already registered")
        entry = registered(id, factory)
        self._registered[id] = entry.prototype
        self._factories[id] = entry.make
        return self

    def add_edge(
        self, source: ExecutorRef, target: ExecutorRef, condition: Predicate | None = None
    ) -> WorkflowBuilder:
        """Send ``source``'s messages to ``target`` (when ``condition(message)``,
        sync or async, is true)."""
        if condition is not None and not callable(condition):
            raise WorkflowDefinitionError(
                f"edge {_ref_name(source)} -> {_ref_name(target)}: condition must be callable"
            )
        return self._add(_Draft(DirectEdge, (source,), (target,), condition=condition))

    def add_fan_out(self, source: ExecutorRef, targets: Sequence[ExecutorRef]) -> WorkflowBuilder:
        """Send each of ``source``'s messages to every target that accepts it
        (one target on its own counts as a list of one)."""
        targets = _as_refs(targets)
        if not targets:
            raise WorkflowDefinitionError(f"fan-out from {_ref_name(source)}: no targets")
        return self._add(_Draft(FanOutEdge, (source,), targets))

    def add_fan_in(self, sources: Sequence[ExecutorRef], target: ExecutorRef) -> WorkflowBuilder:
        """Once every source has sent, deliver ``target`` one ``list`` of their
        messages in source order (buffered across supersteps). One source on
        its own counts as a list of one."""
        sources = _as_refs(sources)
        if not sources:
            raise WorkflowDefinitionError(f"fan-in to {_ref_name(target)}: no sources")
        return self._add(_Draft(FanInEdge, sources, (target,)))

    def add_switch(self, source: ExecutorRef, cases: Sequence[Case | Default]) -> WorkflowBuilder:
        """Send each message to the target of the first matching ``Case``, or
        to the ``Default`` (which must come last)."""
        cases = tuple(cases)
        where = f"switch from {_ref_name(source)}"
        plain = [c for c in cases if isinstance(c, Case)]
        defaults = [c for c in cases if isinstance(c, Default)]
        if len(plain) + len(defaults) != len(cases):
            raise WorkflowDefinitionError(f"{where}: cases must be Case(...) or Default(...)")
        if not plain and not defaults:
            raise WorkflowDefinitionError(f"{where}: no cases")
        if len(defaults) > 1 or (defaults and cases[-1] is not defaults[0]):
            raise WorkflowDefinitionError(f"{where}: at most one Default, and it must come last")
        for case in plain:
            if not callable(case.predicate):
                raise WorkflowDefinitionError(f"{where}: a case predicate is not callable")
        return self._add(
            _Draft(
                SwitchEdge,
                (source,),
                tuple(c.target for c in plain),
                cases=tuple(c.predicate for c in plain),
                default=defaults[0].target if defaults else None,
            )
        )

    def add_multi_select(
        self, source: ExecutorRef, targets: Sequence[ExecutorRef], selector: Selector
    ) -> WorkflowBuilder:
        """Send each message to the targets ``selector(message, target_ids)``
        returns (sync or async); an unknown id fails the run."""
        targets = _as_refs(targets)
        if not targets:
            raise WorkflowDefinitionError(f"multi-select from {_ref_name(source)}: no targets")
        if not callable(selector):
            raise WorkflowDefinitionError(
                f"multi-select from {_ref_name(source)}: selector must be callable"
            )
        return self._add(_Draft(MultiSelectEdge, (source,), targets, selector=selector))

    def add_chain(self, executors: Sequence[ExecutorRef]) -> WorkflowBuilder:
        """``add_edge`` between each consecutive pair."""
        chain = _as_refs(executors)
        if len(chain) < 2:
            raise WorkflowDefinitionError("add_chain needs at least two executors")
        for source, target in itertools.pairwise(chain):
            self.add_edge(source, target)
        return self

    def add_map(
        self,
        source: ExecutorRef,
        worker: Worker,
        *,
        id: str,
        to: ExecutorRef,
        max_concurrency: int | None = None,
    ) -> WorkflowBuilder:
        """Map ``source``'s messages over workers made at run time: each
        message is handled by its own new ``worker`` (an ``Executor``
        subclass, called with ``id``; a function returning a new executor; or
        an ``@executor`` function), all of a superstep's at once (at most
        ``max_concurrency``), and ``to`` receives one list of what they sent,
        in the order ``source`` sent the messages. ``id`` names the map node
        (in events, breakpoints and drawings)."""
        check_id(id, "add_map: id")
        make, prototype = map_worker(id, worker)
        if isinstance(prototype, WorkflowExecutor) and prototype.intercept_requests:
            raise WorkflowDefinitionError(
                f"add_map {id!r}: its worker is a WorkflowExecutor with intercept_requests=True, "
                "which sends its child's requests on as messages: in a map they would go into "
                "the map's list, where nothing can answer them (a map's workers last one "
                "message each, and may not open requests); build it without "
                "intercept_requests, and ask before the map or after it, or answer inside "
                "the child"
            )
        # Two workers side by side: an executor instance in both (in a
        # sub-workflow they run, however deep) would serve two items at once.
        first, second = _instances(prototype, id), _instances(make(), id)
        shared = [where for key, where in first.items() if key in second]
        if shared and max_concurrency != 1:
            raise WorkflowDefinitionError(
                f"add_map {id!r}: every item's worker uses the executor instance at "
                f"{shared[0]!r} (a sub-workflow built once, wrapped by each worker), but a "
                "map's items run at once: build it anew in the worker factory, register it "
                "as a factory (builder.register(id, factory)), or pass max_concurrency=1"
            )
        node = MapExecutor(id, prototype, make, max_concurrency)
        if shared:  # (one item at a time: then the map serves one run at a time too)
            node.stateless = False
        self._register(node)
        self._add(_Draft(DirectEdge, (source,), (node,)))
        return self._add(_Draft(DirectEdge, (node,), (to,)))

    def _register(self, executor: Executor) -> None:
        if not isinstance(executor, Executor):
            raise WorkflowDefinitionError(
                f"expected an Executor or an executor id, got {type(executor).__name__}"
            )
        if not hasattr(executor, "_specs"):
            raise WorkflowDefinitionError(
                f"{type(executor).__name__} instance was not initialised: its __init__ must "
                "call super().__init__(id=...)"
            )
        known = self._registered.get(executor.id)
        if known is None:
            self._registered[executor.id] = executor
        elif known is not executor or executor.id in self._factories:
            self._clashes.append((known, executor))

    def _add(self, draft: _Draft) -> WorkflowBuilder:
        refs = (*draft.sources, *draft.targets) + (
            (draft.default,) if draft.default is not None else ()
        )
        for ref in refs:
            if isinstance(ref, Executor):
                self._register(ref)
            elif not isinstance(ref, str):
                raise WorkflowDefinitionError(
                    f"expected an Executor or an executor id, got {type(ref).__name__}"
                )
        self._drafts.append(draft)
        return self

    # -- building --------------------------------------------------------------

    def build(self) -> Workflow:
        """Validate and return the workflow."""
        for first, second in self._clashes:
            if first.id in self._factories:
                raise WorkflowDefinitionError(
                    f"duplicate executor id {first.id!r}: registered as a factory and used as "
                    f"the instance {second!r}"
                )
            raise WorkflowDefinitionError(
                f"duplicate executor id {first.id!r}: used by {first!r} and by a different "
                f"object {second!r}"
            )
        executors = dict(self._registered)
        if self._start not in executors:
            raise WorkflowDefinitionError(
                f"the start executor {self._start!r} is not registered; register it with "
                f"register({self._start!r}, ...) or pass the executor itself as start"
            )
        check_tree(executors)
        edges = tuple(self._resolve(d, executors) for d in self._drafts)
        _check_duplicate_edges(edges, {e for e, x in executors.items() if type(x) is MapExecutor})
        for edge in edges:
            _check_types(edge, executors)
        _check_reachable(self._start, executors, edges)
        output_ids = self._output_ids(executors)
        nodes = {eid: self._node(eid, i, ex) for i, (eid, ex) in enumerate(executors.items())}
        graph = Graph(name=self._name, start=self._start, nodes=nodes, edges=edges)
        codec = RunCodec(
            workflow=self._name,
            signature=graph_signature(graph, executors, self._reducers),
            registry=self._registry(executors),
            executors=executors,
            factories=self._factories,
        )
        before, after = (self._breakpoint_ids(refs, executors) for refs in self._breakpoints)
        return Workflow(
            shared_children=self._shared_children(executors),
            graph=graph,
            executors=executors,
            factories=frozenset(self._factories),
            max_supersteps=self._max_supersteps,
            strict=self._strict,
            output_ids=output_ids,
            codec=codec,
            checkpoints=self._checkpoints,
            reducers=self._reducers,
            breakpoints=Breakpoints(before=before, after=after),
        )

    def _shared_children(self, executors: dict[str, Executor]) -> dict[str, str]:
        """The registered factories whose sub-workflow executors use executor
        instances every call's does too (what each says of them), so that two
        runs of this workflow would meet in them: the factory wraps the same
        sub-workflow at every call, one whose runs take turns, or the child
        it builds at each call runs a sub-workflow built once (however
        deep)."""
        shared = {}
        for eid, make in self._factories.items():
            made = executors[eid]
            child = getattr(made, "workflow", None)
            if not isinstance(child, Workflow):
                continue
            again = make_executor(make, eid)  # (one more, as each run would make)
            second = _instances(again, eid)
            common = [where for key, where in _instances(made, eid).items() if key in second]
            if not common:
                continue
            same_child = getattr(again, "workflow", None) is child
            if same_child:  # (the factory wraps that one workflow at every call)
                ids = ", ".join(repr(e.id) for e in child.shared_instances[:3])
                shared[eid] = (
                    f"runs sub-workflow {child.name!r}, whose executor instances "
                    f"({ids or 'in its own sub-workflows'}) are shared by its runs, so it "
                    "runs one run at a time; build the child workflow in the factory"
                )
            else:
                shared[eid] = (
                    f"runs a sub-workflow that uses the executor instance at {common[0]!r} "
                    "(in a workflow built once), which every call's uses, so it runs one "
                    "run at a time; build that workflow in the factory too"
                )
        return shared

    def _node(self, eid: str, index: int, ex: Executor) -> Node:
        make = self._factories.get(eid)
        if isinstance(ex, MapExecutor):
            return Node(
                id=eid,
                index=index,
                invoke=ex._invoke,
                accepts=ex.accepts,
                retry=ex.retry,
                timeout=ex.timeout,
                placement=ex.placement,
                map=ex.plan,
            )
        return Node(
            id=eid,
            index=index,
            invoke=ex._invoke if make is None else partial(per_run_invoke, eid, make),
            accepts=ex.accepts,
            retry=ex.retry,
            timeout=ex.timeout,
            responds=ex.responds if ex.handles_responses else None,
            host=ex if make is None else None,
            placement=ex.placement,
            make=make,
        )

    def _breakpoint_ids(
        self, refs: tuple[ExecutorRef, ...], executors: dict[str, Executor]
    ) -> frozenset[str]:
        return known_ids(refs, executors, "interrupt_before/interrupt_after")

    def _registry(self, executors: dict[str, Executor]) -> TypeRegistry:
        registry = TypeRegistry()
        for executor in executors.values():
            if executor.takes_snapshots and type(executor).restore is Executor.restore:
                raise WorkflowDefinitionError(
                    f"executor {executor.id!r} ({type(executor).__name__}) overrides snapshot() "
                    "but not restore(); define both"
                )
            for tp in executor.declared_types:
                try:
                    registry.add(tp)
                except ValueError as exc:
                    raise WorkflowDefinitionError(f"executor {executor.id!r}: {exc}") from exc
        for tp in self._checkpoint_types:
            try:
                registry.add(tp)
            except ValueError as exc:
                raise WorkflowDefinitionError(f"checkpoint_types: {exc}") from exc
        return registry

    def _resolve(self, draft: _Draft, executors: dict[str, Executor]) -> EdgeGroup:
        def ident(ref: ExecutorRef) -> str:
            name = _ref_name(ref)
            if name not in executors:
                shown = ", ".join(_ref_name(r) for r in (*draft.sources, *draft.targets))
                kind = "" if draft.kind.kind == "edge" else f"{draft.kind.kind} "
                raise WorkflowDefinitionError(
                    f"{kind}edge ({shown}) names unknown executor {name!r}; "
                    f"known: {sorted(executors)}"
                )
            return name

        sources = tuple(ident(s) for s in draft.sources)
        targets = tuple(ident(t) for t in draft.targets)
        if draft.kind is SwitchEdge:
            default = ident(draft.default) if draft.default is not None else None
            all_targets = tuple(dict.fromkeys(targets + ((default,) if default else ())))
            return SwitchEdge(
                sources,
                all_targets,
                cases=tuple(zip(draft.cases, targets, strict=True)),
                default=default,
            )
        if draft.kind is DirectEdge:
            return DirectEdge(sources, targets, condition=draft.condition)
        if draft.kind is MultiSelectEdge:
            return MultiSelectEdge(sources, targets, selector=draft.selector)
        return draft.kind(sources, targets)

    def _output_ids(self, executors: dict[str, Executor]) -> frozenset[str] | None:
        if self._output_from is None:
            return None
        if not self._output_from:
            raise WorkflowDefinitionError(
                "output_from=[] names no executor, so the workflow could never yield an output; "
                "list the executors whose yields are outputs, or leave output_from out (all)"
            )
        ids: list[str] = []
        for ref in self._output_from:
            name = _ref_name(ref)
            executor = executors.get(name)
            if executor is None or (isinstance(ref, Executor) and executor is not ref):
                raise WorkflowDefinitionError(
                    f"output_from names {name!r}, which is not an executor of this workflow"
                )
            if executor.workflow_output_types is typing.Never:
                raise WorkflowDefinitionError(
                    f"output_from names {name!r}, but none of its handlers declares workflow "
                    "outputs (use WorkflowContext[Out, WorkflowOut] or "
                    "@handler(workflow_output=...))"
                )
            ids.append(name)
        return frozenset(ids)


def _checked_reducers(
    reducers: Mapping[str, Callable[[Any, Any], Any]] | None,
) -> dict[str, Callable[[Any, Any], Any]]:
    checked = dict(reducers or {})
    for key, reducer in checked.items():
        if not isinstance(key, str):
            raise WorkflowDefinitionError(f"reducers: state keys are str, not {key!r}")
        if not callable(reducer):
            raise WorkflowDefinitionError(
                f"reducers: the reducer of {key!r} must be callable (value, write) -> value, "
                f"not {reducer!r}"
            )
    return checked


def _check_duplicate_edges(edges: tuple[EdgeGroup, ...], maps: set[str]) -> None:
    seen: dict[tuple[str, str], EdgeGroup] = {}
    for edge in edges:
        for bag, what in ((edge.sources, "source"), (edge.targets, "target")):
            if len(set(bag)) != len(bag) and type(edge) is not SwitchEdge:
                raise WorkflowDefinitionError(f"{edge.label()}: a {what} is listed twice")
        for source in edge.sources:
            for target in edge.targets:
                earlier = seen.get((source, target))
                if earlier is not None:
                    hint = ""
                    if source in maps:  # (its edge to ``to`` comes with add_map)
                        hint = (
                            f"; map {source!r} sends its list to {target!r} (its to=) already: "
                            "to gather that list with other messages, send it to a relay "
                            "executor (to=relay) and fan in from the relay"
                        )
                    raise WorkflowDefinitionError(
                        f"duplicate edge {source} -> {target}: declared by {earlier.label()} "
                        f"and by {edge.label()}{hint}"
                    )
                seen[(source, target)] = edge


def _check_types(edge: EdgeGroup, executors: dict[str, Executor]) -> None:
    outputs = {s: executors[s].output_types for s in edge.sources}
    for source, out in outputs.items():
        if out is typing.Never:
            why, remedy = executors[source]._why_it_sends_nothing()
            raise WorkflowDefinitionError(
                f"{edge.label()}: {source!r} declares no message types it sends ({why}); "
                f"{remedy}, or remove the edge"
            )
    for target in edge.targets:
        accepted = executors[target].input_types
        if type(edge) is FanInEdge:
            item = union_of(list(outputs.values()))
            carried: Any = list[item]  # type: ignore[valid-type]
        else:
            carried = outputs[edge.sources[0]]
        if not any(may_overlap(carried, tp) for tp in accepted):
            raise WorkflowDefinitionError(
                f"{edge.label()}: {target!r} cannot accept what it would receive: "
                f"{type_name(carried)} is sent, it handles "
                f"{', '.join(type_name(t) for t in accepted)}"
            )


def _check_reachable(
    start: str, executors: dict[str, Executor], edges: tuple[EdgeGroup, ...]
) -> None:
    successors: dict[str, set[str]] = {}
    for edge in edges:
        for source in edge.sources:
            successors.setdefault(source, set()).update(edge.targets)
    seen = {start}
    frontier = [start]
    while frontier:
        for nxt in successors.get(frontier.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    unreachable = [e for e in executors if e not in seen]
    if unreachable:
        raise WorkflowDefinitionError(
            f"executor(s) {unreachable} cannot be reached from the start executor {start!r}"
        )


def _as_refs(refs: Any) -> tuple[Any, ...]:
    """Executors or ids; one on its own counts as a list of one."""
    if isinstance(refs, str) or not isinstance(refs, Iterable):
        return (refs,)
    return tuple(refs)
