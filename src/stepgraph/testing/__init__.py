"""Test doubles for code built on stepgraph's agents: a scripted chat model
(no HTTP) and a fake OpenAI-compatible server (real HTTP on loopback)."""

from ._fake_openai import FakeOpenAIServer as FakeOpenAIServer
from ._fake_openai import FakeReply as FakeReply
from ._scripted import ScriptedCall as ScriptedCall
from ._scripted import ScriptedModel as ScriptedModel
from ._scripted import ScriptedReply as ScriptedReply

__all__ = ["FakeOpenAIServer", "FakeReply", "ScriptedCall", "ScriptedModel", "ScriptedReply"]
