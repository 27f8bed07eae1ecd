"""``Agent``: an executor that converses with a chat model and calls tools.

One input (a text, a list of messages, or another agent's response) starts a
conversation turn loop: call the model (streaming its text as
:class:`AgentDelta` events); if it asks for tools, run them — those that
need approval only once a reviewer answered their request — and call the
model again with every result; when it answers without tools, send the
answer on (or yield it, at the end of a graph).

The agent's whole conversation, the tool calls of the current model turn
with their results, and its open approvals are its snapshot, so a run that
goes on from a checkpoint — after an approval, in another process — repeats
no model turn and no tool call that a checkpoint already holds.
"""

from __future__ import annotations

import asyncio
import json
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from .._checkpoint import SnapshotPart
from .._core import (
    PendingRequest,
    Placement,
    RequestError,
    Usage,
    WorkflowContext,
    end_span,
    run_all,
    type_name,
    within,
)
from .._exceptions import AgentError, ModelError, WorkflowDefinitionError
from .._executor import Executor, handler, response_handler
from .._handlers import (
    HandlerOptions,
    HandlerSpec,
    ResponseOptions,
    ResponseSpec,
    build_response_spec,
    build_spec,
)
from ._approval import ToolApproval, ToolApprovalRequest
from ._events import AgentDelta, ToolCallEvent, ToolCallStatus
from ._tools import Tool, ToolArgumentsError, as_tools, json_text, tool_error_text
from ._types import (
    AgentResponse,
    ChatMessage,
    ChatModel,
    ModelReply,
    ModelRetrying,
    TextDelta,
    ToolCall,
)

__all__ = ["Agent"]

# Where a tool call of the current model turn stands.
_APPROVAL, _READY, _DONE = "approval", "ready", "done"


@dataclass(frozen=True, slots=True)
class _Answered:
    """An answer as the journal keeps it: the conversation's first
    ``messages`` messages (the answer last) and the tokens it took."""

    messages: int
    usage: Usage


_REPAIR: Any = object()  # a reply gets a repair turn


@dataclass(slots=True)
class _PendingCall:
    """One tool call of the current model turn: its phase, the arguments it
    runs with (the model's, or a reviewer's edit; JSON values) and, once
    done, the result the model is given."""

    call: ToolCall
    phase: str
    arguments: dict[str, Any]
    result: str | None = None


class Agent(Executor):
    """An LLM agent as an executor.

    It takes a ``str`` (a user message), a ``list[ChatMessage]``, or an
    :class:`AgentResponse` from another agent (its conversation carries on
    here). It sends an :class:`AgentResponse` — or, with ``output_type=T``
    (a pydantic model or dataclass), a validated ``T`` — to its successors,
    or yields it as a workflow output when it has no outgoing edges.

    ``tools`` are :func:`~stepgraph.tool` objects or plain functions;
    ``max_turns`` bounds the model calls per input; ``max_parallel_tools``
    the tool calls of one model turn that run at once. ``timeout`` bounds
    in seconds each call of the agent on an input (all its model turns and
    tools: a model that streams for ever then fails the run, "executor X
    timed out", instead of holding it); ``placement`` is where
    it runs on a distributed backend, as for any executor. The conversation
    lives for the run (a new run starts a new one); register the agent with
    a factory (``builder.register(id, lambda: Agent(...))``) to serve
    concurrent runs.
    """

    def __init__(
        self,
        id: str,
        *,
        model: ChatModel,
        instructions: str | None = None,
        tools: Iterable[Tool | Any] = (),
        output_type: type[Any] | None = None,
        max_turns: int = 10,
        max_parallel_tools: int = 4,
        timeout: float | None = None,
        placement: Placement | None = None,
    ) -> None:
        if not callable(getattr(model, "stream", None)):
            raise WorkflowDefinitionError(
                f"agent {id!r}: model must be a ChatModel (with a stream() method), got "
                f"{type(model).__name__}"
            )
        for name, value in (("max_turns", max_turns), ("max_parallel_tools", max_parallel_tools)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkflowDefinitionError(
                    f"agent {id!r}: {name} must be a positive int, got {value!r}"
                )
        if instructions is not None and not isinstance(instructions, str):
            raise WorkflowDefinitionError(f"agent {id!r}: instructions must be a str")
        self.model = model
        self.instructions = instructions
        try:
            self.tools: dict[str, Tool] = as_tools(tools)
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"agent {id!r}: {exc}") from exc
        self.output_type = output_type
        self.max_turns = max_turns
        self.max_parallel_tools = max_parallel_tools
        self._schemas = [t.schema() for t in self.tools.values()]
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        self._response_format: dict[str, Any] | None = None
        if output_type is not None:
            try:
                self._adapter = pydantic.TypeAdapter(output_type)
                schema = self._adapter.json_schema()
            except Exception as exc:
                raise WorkflowDefinitionError(
                    f"agent {id!r}: output_type {type_name(output_type)} has no JSON schema "
                    f"({exc}); use a pydantic model or a dataclass"
                ) from exc
            top = schema
            ref = schema.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):  # (a recursive model)
                top = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
            if top.get("type") != "object":
                raise WorkflowDefinitionError(
                    f"agent {id!r}: output_type {type_name(output_type)} is not a JSON object, "
                    "which a model's structured output must be; use a pydantic model or a "
                    "dataclass (one with a single field, to return a single value)"
                )
            # (OpenAI takes letters, digits, '_' and '-' for the name, at
            # most 64: a generic model is named 'Page[int]')
            name = _FORMAT_NAME.sub("_", getattr(output_type, "__name__", ""))[:64] or "output"
            self._response_format = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema},
            }
        self._out: Any = output_type if output_type is not None else AgentResponse
        # What its errors and warnings call it: its id, or — run as a map's
        # worker, whatever id its factory gave it — its item of the map, as
        # paths spell one (``drafts[0]``): see ``_call``.
        self._who = id
        self._reset(None)
        super().__init__(id, timeout=timeout, placement=placement)

    # -- the handler table: what it sends depends on output_type -------------

    def _handler_specs(self) -> tuple[HandlerSpec, ...]:  # type: ignore[override]
        options = HandlerOptions(output=self._out, workflow_output=self._out)
        return tuple(
            build_spec(func, options, owner=f"Agent {self.id!r}", is_method=True, order=i)
            for i, func in enumerate(_INPUT_HANDLERS)
        )

    def _response_handler_specs(self) -> tuple[ResponseSpec, ...]:  # type: ignore[override]
        options = ResponseOptions(output=self._out, workflow_output=self._out)
        spec = build_response_spec(
            Agent._on_approval, options, owner=f"Agent {self.id!r}", order=0, name="_on_approval"
        )
        return (spec,)

    @property
    def declared_types(self) -> list[Any]:
        return [*super().declared_types, _PendingCall, _Answered, Usage]

    def check_response(self, request: PendingRequest, response: Any) -> None:
        """An edit's arguments must fit the tool: refused at the answer
        (the reviewer is told why, the approval stays open) rather than
        reaching the model as an error after the answer was spent."""
        asked, approval = request.request, response
        if not isinstance(asked, ToolApprovalRequest) or not isinstance(approval, ToolApproval):
            return
        tool = self.tools.get(asked.tool)
        if approval.decision != "edit" or tool is None:
            return
        try:
            tool.parse(json.dumps(approval.arguments))
        except ToolArgumentsError as exc:
            raise ValueError(
                f"the edited arguments do not fit tool {asked.tool!r}: {exc}"
            ) from None

    # -- inputs --------------------------------------------------------------

    def check_input(self, message: Any) -> None:
        """A run that would start with no message is refused before it
        starts, rather than failing in its first superstep."""
        messages = message.messages if isinstance(message, AgentResponse) else message
        if isinstance(messages, list | tuple) and not messages:
            raise ValueError(
                "an empty list of messages; send at least one (a string is one user message)"
            )

    @handler
    async def _on_text(self, text: str, ctx: WorkflowContext[Any, Any]) -> None:
        await self._call(text, ctx, lambda: self._take([ChatMessage.user(text)]))

    @handler
    async def _on_messages(
        self, messages: list[ChatMessage], ctx: WorkflowContext[Any, Any]
    ) -> None:
        await self._call(messages, ctx, lambda: self._take(list(messages)))

    @handler
    async def _on_response(self, response: AgentResponse, ctx: WorkflowContext[Any, Any]) -> None:
        await self._call(response, ctx, lambda: self._take(list(response.messages), True))

    @response_handler
    async def _on_approval(
        self, request: ToolApprovalRequest, approval: ToolApproval, ctx: WorkflowContext[Any, Any]
    ) -> None:
        await self._call(approval, ctx, lambda: self._approve(request, approval, ctx))

    # -- one handler call, and its replay after a resume ---------------------------

    def _reset(self, run_id: str | None) -> None:
        self._run_id = run_id
        self._pages: list[SnapshotPart] = []  # the conversation as stored (``_pages_now``)
        # Restored from a checkpoint and not called since: a fork goes on with
        # the conversation of the run it was forked from (see ``_call``).
        self._restored = False
        self._messages: list[ChatMessage] = []
        self._turn_calls: list[_PendingCall] = []
        self._call_ids: set[str] = set()  # every tool call id of the conversation
        self._asked: dict[str, int] = {}  # call id -> the superstep its approval was asked in
        self._turns = 0  # model calls for the current input
        self._repaired = False
        self._answer_usage = Usage()
        # The handler calls of superstep ``_step``: what each one that ended
        # answered (``_done``), and whether the next one was under way.
        self._step: int | None = None
        self._done: list[Any] = []
        self._inflight = False
        # Not in the snapshot: which call of this superstep is running.
        self._seen_step: int | None = None
        self._cursor = 0
        self._last: tuple[Any, int] | None = None

    async def _call(
        self, message: Any, ctx: WorkflowContext[Any, Any], take: Callable[[], None]
    ) -> None:
        """One handler call. Going on from a checkpoint saved within this
        superstep (after a crash), the calls that had ended send their
        answers again (the superstep's sends were lost with it) and the one
        under way goes on where its snapshot says: no model turn or tool call
        runs twice."""
        if ctx._item is not None:
            self._who = f"{ctx.executor_id}[{ctx._item}]"
        if ctx.run_id != self._run_id:
            if self._restored and self._run_id in ctx.forked_from:
                # Restored in a fork from the run it branched off (or an
                # earlier one): the conversation goes on under the fork's id.
                self._run_id = ctx.run_id
            else:
                self._reset(ctx.run_id)  # a new run: a new conversation
        self._restored = False
        index = self._position(message, ctx.superstep)
        await self._go_on(index, ctx, take)
        # It ended: the same message object again (a text two executors
        # send, a message sent twice) is the next call, not this one retried.
        self._last = None

    async def _go_on(
        self, index: int, ctx: WorkflowContext[Any, Any], take: Callable[[], None]
    ) -> None:
        """The superstep's handler call ``index``: its answer sent again if
        it had ended, else the conversation taken or gone on with."""
        if self._step == ctx.superstep and index < len(self._done):
            done = self._done[index]
            if done is None:  # it ended waiting for approvals: those asked now were lost
                await self._reopen(ctx)
            else:
                self._deliver(self._answer_of(done), ctx)
            return
        if self._step == ctx.superstep and index == len(self._done) and self._inflight:
            await self._reopen(ctx)
        else:
            if self._step != ctx.superstep:
                self._step, self._done = ctx.superstep, []
            take()
            self._inflight = True
        answer = await self._converse(ctx)
        self._done.append(answer)
        self._inflight = False
        self._deliver(self._answer_of(answer), ctx)
        await ctx.save_progress()

    def _position(self, message: Any, step: int) -> int:
        """This call's place among the superstep's handler calls (a call
        retried after it failed keeps its place)."""
        if self._last is not None and self._last[0] is message and self._seen_step == step:
            return self._last[1]
        if self._seen_step != step:
            self._seen_step, self._cursor = step, 0
        index, self._cursor = self._cursor, self._cursor + 1
        self._last = (message, index)
        return index

    def _take(self, messages: list[ChatMessage], carry_on: bool = False) -> None:
        if not messages:
            raise AgentError(f"agent {self._who!r} got an empty list of messages")
        if self._turn_calls:
            waiting = [p.call.id for p in self._turn_calls if p.phase == _APPROVAL]
            raise AgentError(
                f"agent {self._who!r} got a new input while its tool calls {waiting} wait for "
                "approval; answer them first"
            )
        if carry_on:  # another agent's conversation: it is this one now
            self._messages = list(messages)
            self._call_ids = {c.id for m in messages for c in m.tool_calls}
        else:
            self._messages.extend(messages)
        self._turns, self._repaired, self._answer_usage = 0, False, Usage()

    def _approve(
        self, request: ToolApprovalRequest, approval: ToolApproval, ctx: WorkflowContext[Any, Any]
    ) -> None:
        pending = next((p for p in self._turn_calls if p.call.id == request.call_id), None)
        if pending is None or pending.phase != _APPROVAL:
            raise AgentError(
                f"agent {self._who!r} has no tool call {request.call_id!r} waiting for approval"
            )
        if approval.decision == "reject":
            reason = approval.reason or "rejected by the reviewer"
            pending.result = f"the call was rejected and did not run: {reason}"
            pending.phase = _DONE
            self._event(ctx, pending.call, "rejected")
        else:
            if approval.decision == "edit":
                pending.arguments = dict(approval.arguments)
            pending.phase = _READY

    async def _reopen(self, ctx: WorkflowContext[Any, Any]) -> None:
        """Approvals asked in this superstep were lost with it: ask again."""
        for pending in self._turn_calls:
            if pending.phase == _APPROVAL and self._asked.get(pending.call.id) == ctx.superstep:
                await self._ask(pending, ctx)

    # -- the loop ----------------------------------------------------------------

    async def _converse(self, ctx: WorkflowContext[Any, Any]) -> Any:
        """Model turns and tool calls until an answer (returned as ``_done``
        keeps it) or approvals to wait for (``None``)."""
        while True:
            if self._turn_calls:
                ready = [p for p in self._turn_calls if p.phase == _READY]
                if ready:
                    await self._run_tools(ready, ctx)
                if any(p.phase == _APPROVAL for p in self._turn_calls):
                    return None  # the run goes idle until every approval is answered
                for pending in self._turn_calls:
                    self._messages.append(ChatMessage.tool(pending.call.id, pending.result or ""))
                self._turn_calls, self._asked = [], {}
            reply = await self._model_turn(ctx)
            if reply.message.tool_calls:
                await self._open_calls(reply.message, ctx)
                await ctx.save_progress()  # the model turn is not asked again
                continue
            self._messages.append(reply.message)
            if reply.refusal is not None and self._adapter is not None:
                raise AgentError(
                    f"agent {self._who!r}: the model refused to answer with "
                    f"{type_name(self.output_type)}: {_excerpt(reply.refusal)}"
                )
            # (with an output type it gets its repair turn; a reply cut
            # short was warned about as such)
            empty = not reply.message.content and reply.finish_reason in (None, "stop")
            if empty and self._adapter is None:
                said = "" if reply.finish_reason is None else ", finish_reason 'stop'"
                ctx._warn(
                    f"agent {self._who!r}: the model's reply is empty (no text, no tool "
                    f"calls{said}); the answer is the empty text"
                )
            answer = self._finish(reply.message.content or "")
            if answer is not _REPAIR:
                return answer

    async def _model_turn(self, ctx: WorkflowContext[Any, Any]) -> ModelReply:
        if self._turns >= self.max_turns:
            raise AgentError(
                f"agent {self._who!r} reached max_turns={self.max_turns} model calls for one "
                "input without a final answer"
            )
        self._turns += 1
        messages = self._messages
        if self.instructions:
            messages = [ChatMessage.system(self.instructions), *messages]
        model = self.model.name
        span = ctx._operation(
            f"chat {model}",
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
             "gen_ai.agent.name": ctx.executor_id, "stepgraph.agent.turn": self._turns},
        )  # fmt: skip
        try:
            reply = await self._stream_turn(messages, ctx)
        except BaseException as exc:
            if span is not None:
                end_span(span, exc)
            raise
        if span is not None:
            if reply.usage:
                span.set("gen_ai.usage.input_tokens", reply.usage.prompt_tokens)
                span.set("gen_ai.usage.output_tokens", reply.usage.completion_tokens)
            if reply.finish_reason:
                span.set("gen_ai.response.finish_reasons", [reply.finish_reason])
            span.end()
        return reply

    async def _stream_turn(
        self, messages: list[ChatMessage], ctx: WorkflowContext[Any, Any]
    ) -> ModelReply:
        attempt, reply = 1, None
        stream = self.model.stream(
            messages, tools=self._schemas, response_format=self._response_format
        )
        # (ctx's id, not ours: a map's worker runs under the map's id)
        turn, step, own = self._turns, ctx.superstep, ctx.executor_id
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    delta = AgentDelta(
                        text=item.text, turn=turn, attempt=attempt, executor_id=own,
                        superstep=step,
                    )  # fmt: skip
                    ctx.add_event(delta)  # (dropped at once when nobody streams)
                elif isinstance(item, ModelRetrying):
                    attempt = item.attempt
                    ctx._warn(
                        f"agent {self._who!r}: the model call failed ({item.reason}); "
                        f"attempt {attempt} in {item.delay:.2f} s"
                    )
                elif isinstance(item, ModelReply):
                    reply = item
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()  # a cancelled turn closes the model's connection
        if not isinstance(reply, ModelReply):
            raise ModelError(f"agent {self._who!r}: the model's stream ended without a reply")
        if reply.usage:
            ctx.add_usage(reply.usage)
            self._answer_usage = self._answer_usage + reply.usage
        if reply.finish_reason not in (None, "stop", "tool_calls"):
            ctx._warn(
                f"agent {self._who!r}: the model stopped its reply early "
                f"(finish_reason {reply.finish_reason!r}); the answer may be cut short"
            )
        return reply

    async def _open_calls(self, message: ChatMessage, ctx: WorkflowContext[Any, Any]) -> None:
        """Take the model's tool calls: ids made unique across runs,
        arguments checked, approvals asked for."""
        calls = []
        for call in message.tool_calls:
            call_id = self._fresh_id(call.id)
            self._call_ids.add(call_id)
            calls.append(ToolCall(call_id, call.name, call.arguments))
        self._messages.append(ChatMessage.assistant(message.content, calls))
        self._turn_calls = []
        for call in calls:
            pending = _PendingCall(call, _READY, {})
            self._turn_calls.append(pending)
            self._event(ctx, call, "requested")
            tool = self.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.tools) or "none"
                pending.result = f"there is no tool {call.name!r}; the tools are: {known}"
                pending.phase = _DONE
                self._event(ctx, call, "rejected")
                continue
            try:
                validated = tool.parse(call.arguments)
                pending.arguments = _json_object(call.arguments)
            except ToolArgumentsError as exc:
                pending.result = str(exc)
                pending.phase = _DONE
                self._event(ctx, call, "rejected")
                continue
            try:
                # The rule sees what the tool would run with (defaults filled
                # in, values coerced), not the model's text: an argument the
                # model left out must not slip past a rule on its default.
                needed = tool.needs_approval(validated)
            except Exception as exc:
                raise AgentError(
                    f"agent {self._who!r}: the approval rule of tool {tool.name!r} raised "
                    f"{type(exc).__name__}: {exc} (call {call.id!r})"
                ) from exc
            if needed:
                pending.phase = _APPROVAL
                await self._ask(pending, ctx)

    async def _ask(self, pending: _PendingCall, ctx: WorkflowContext[Any, Any]) -> None:
        call = pending.call
        request = ToolApprovalRequest(self.id, call.name, pending.arguments, call.id)
        await ctx.request_info(request, ToolApproval, request_id=call.id)
        self._asked[call.id] = ctx.superstep

    def _fresh_id(self, model_id: str) -> str:
        """The call's id in the conversation (and its approval request's):
        the model's id (letters, digits, ``_`` and ``-``; at most 48 of them)
        and the run's first 8 characters — models number their calls
        ``call_0`` in every run, and a request id must name one run — with
        ``-2``, ``-3``... when the conversation has it already."""
        stem = "".join(c for c in model_id if c.isalnum() or c in "_-")[:48] or "call"
        base = f"{stem}-{(self._run_id or '')[:8]}".rstrip("-")
        fresh, n = base, 2
        while fresh in self._call_ids:
            fresh, n = f"{base}-{n}", n + 1
        return fresh

    async def _run_tools(
        self, ready: Sequence[_PendingCall], ctx: WorkflowContext[Any, Any]
    ) -> None:
        """The ready calls, at most ``max_parallel_tools`` at a time; each
        result is kept the moment it is there."""
        slots = asyncio.Semaphore(self.max_parallel_tools)

        async def run(pending: _PendingCall) -> None:
            async with slots:
                status: ToolCallStatus
                tool = self.tools[pending.call.name]
                self._event(ctx, pending.call, "started")
                span = ctx._operation(
                    f"execute_tool {tool.name}",
                    {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name,
                     "gen_ai.tool.call.id": pending.call.id, "gen_ai.agent.name": ctx.executor_id},
                )  # fmt: skip
                try:
                    arguments = tool.parse(json.dumps(pending.arguments))
                    result = await within(span, tool.invoke(arguments))
                except ToolArgumentsError as exc:  # a reviewer's edit that does not fit
                    pending.result, status = str(exc), "rejected"
                except (Exception, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and _cancelled():
                        raise  # the run is being cancelled, not the tool failing
                    if tool.errors == "raise":
                        self._event(ctx, pending.call, "failed")
                        raise AgentError(
                            f"agent {self._who!r}: tool {tool.name!r} (call {pending.call.id!r}) "
                            f"failed: {type(exc).__name__}: {exc}"
                        ) from exc
                    pending.result, status = tool_error_text(tool.name, exc), "failed"
                else:
                    pending.result, status = result, "finished"
                if _edited(pending):
                    # A reviewer's edit: the model learns what ran, or it
                    # would report the call it asked for as the one done.
                    edited = json_text(pending.arguments)
                    pending.result = (
                        f"(a reviewer changed the arguments to {edited}) {pending.result}"
                    )
                pending.phase = _DONE
                self._event(ctx, pending.call, status)
                await ctx.save_progress()  # this call is not made again

        if len(ready) == 1:
            await run(ready[0])
            return
        # Not asyncio.TaskGroup: on Python 3.11 a group whose task fails while
        # the handler waits for it leaves the handler's task marked as being
        # cancelled, so the run would end cancelled rather than failed; and
        # its ExceptionGroup would hide which tool failed.
        try:
            await run_all([run(pending) for pending in ready])
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from failed.exceptions[0].__cause__

    def _finish(self, text: str) -> Any:
        """What to answer with (as ``_done`` keeps it), or ``_REPAIR`` when a
        reply that does not fit the output type gets its one repair turn."""
        if self._adapter is None:  # rebuilt from the conversation when sent
            return _Answered(len(self._messages), self._answer_usage)
        try:
            return self._adapter.validate_json(_unfenced(text))
        except pydantic.ValidationError as exc:
            problems = _problems(exc)
            if self._repaired:
                raise AgentError(
                    f"agent {self._who!r}: the model's reply does not match "
                    f"{type_name(self.output_type)} after a repair turn: {problems} "
                    f"(the reply: {_excerpt(text)})"
                ) from None
            self._repaired = True
            self._messages.append(
                ChatMessage.user(
                    f"Your reply is not valid for the required JSON schema: {problems}. "
                    "Reply again with only the corrected JSON."
                )
            )
            return _REPAIR

    def _answer_of(self, kept: Any) -> Any:
        if type(kept) is _Answered:
            messages = tuple(self._messages[: kept.messages])
            return AgentResponse(messages[-1].content or "", messages, kept.usage)
        return kept

    def _deliver(self, answer: Any, ctx: WorkflowContext[Any, Any]) -> None:
        if answer is None:
            return  # waiting for approvals
        if ctx.has_successors:
            ctx.send_message(answer)
        else:
            ctx.yield_output(answer)

    def _event(
        self, ctx: WorkflowContext[Any, Any], call: ToolCall, status: ToolCallStatus
    ) -> None:
        ctx.add_event(ToolCallEvent(call_id=call.id, tool=call.name, status=status))

    # -- checkpoints ---------------------------------------------------------------

    def _pages_now(self) -> tuple[list[SnapshotPart], int]:
        """The conversation's full pages, as parts, and how many messages
        they hold: a page is stored once (and encoded once) however many
        checkpoints hold it, so a long conversation's checkpoints cost what
        it added since, not all of it. A page is full at ``_PAGE`` messages,
        or sooner once its text reaches ``_PAGE_TEXT`` characters (a long
        tool result is a page of its own, not re-stored with the messages
        after it). A page is kept while its messages are still the
        conversation's (the very objects: it grows by appending, and is
        replaced whole when another agent's conversation is taken over)."""
        messages, pages = self._messages, self._pages
        kept = start = 0
        for page in pages:
            held = page.value
            end = start + len(held)
            if end > len(messages) or not all(map(operator.is_, held, messages[start:end])):
                break
            kept, start = kept + 1, end
        del pages[kept:]
        first = start
        size = 0
        for n, message in enumerate(messages[start:], start + 1):
            size += len(message.content or "")
            size += sum(len(call.arguments) for call in message.tool_calls)
            if n - first == _PAGE or size >= _PAGE_TEXT:
                pages.append(SnapshotPart(tuple(messages[first:n])))
                first, size = n, 0
        return pages, first

    def snapshot(self) -> Any:
        pages, paged = self._pages_now()
        return {
            "run_id": self._run_id,
            "pages": list(pages),
            "messages": self._messages[paged:],  # (after the pages)
            "calls": list(self._turn_calls),
            "asked": dict(self._asked),
            "turns": self._turns,
            "repaired": self._repaired,
            "usage": self._answer_usage,
            "step": self._step,
            "done": list(self._done),
            "inflight": self._inflight,
        }

    def snapshot_run(self) -> str | None:
        # The conversation is its run's: a new run's checkpoints, written
        # before the agent is called in it, do not store the last run's.
        return self._run_id

    def _withdraw(self, snapshot: Any, request_id: str) -> None:
        raise RequestError(
            f"update_state: request {request_id!r} asks for the approval of a tool call of "
            f"agent {self.id!r}, whose turn waits for it; it cannot be dropped — answer it "
            "instead, e.g. with ToolApproval.reject(reason)"
        )

    def restore(self, snapshot: Any) -> None:
        self._reset(snapshot["run_id"])
        # (a snapshot of an earlier stepgraph holds its messages all in "messages")
        pages = list(snapshot.get("pages", ()))
        self._messages = [m for page in pages for m in page.value] + list(snapshot["messages"])
        self._pages = pages
        self._turn_calls = list(snapshot["calls"])
        # (every call id is in the conversation's messages: not stored twice)
        self._call_ids = {c.id for m in self._messages for c in m.tool_calls}
        self._call_ids.update(snapshot.get("call_ids", ()))  # (an earlier stepgraph's)
        self._asked = dict(snapshot["asked"])
        self._turns = snapshot["turns"]
        self._repaired = snapshot["repaired"]
        self._answer_usage = snapshot["usage"]
        self._step = snapshot["step"]
        self._done = list(snapshot["done"])
        self._inflight = snapshot["inflight"]
        self._restored = True


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text) if text.strip() else {}
    return value if isinstance(value, dict) else {}


def _edited(pending: _PendingCall) -> bool:
    """Whether a reviewer's edit changed the arguments the model asked for
    (compared as JSON: a NaN the model sent is not equal to itself)."""
    asked = _json_object(pending.call.arguments)
    if pending.arguments == asked:
        return False
    return json.dumps(pending.arguments, sort_keys=True) != json.dumps(asked, sort_keys=True)


def _cancelled() -> bool:
    """Whether the running task is being cancelled (rather than a tool
    raising a ``CancelledError`` of its own, from something it awaited that
    another party cancelled)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _excerpt(text: str, limit: int = 200) -> str:
    """A model's text for an error message: on one line, cut at ``limit``."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def _problems(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:8]:
        where = ".".join(str(p) for p in error["loc"]) or "the reply"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


_INPUT_HANDLERS: tuple[Callable[..., Any], ...] = (
    Agent._on_text,
    Agent._on_messages,
    Agent._on_response,
)


# A stored page of a conversation: at most this many messages, or of text
# (see ``Agent._pages_now``).
_PAGE = 32
_PAGE_TEXT = 16_384

_FORMAT_NAME = re.compile(r"[^A-Za-z0-9_-]")

_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


def _unfenced(text: str) -> str:
    """A reply wrapped in a Markdown code fence (```json ... ```), as models
    without a strict JSON mode often send it: what the fence holds."""
    found = _FENCE.match(text)
    return found.group(1) if found is not None else text
