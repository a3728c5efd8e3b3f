"""inputs -- the prompt forms vLLM accepts, reduced to (text, token_ids).

Owns: the parsing of prompts (str, {"prompt": str}, {"prompt_token_ids": [...]},
a list of ints, or a list of any of these) and of chat conversations.
"""
from typing import Any, List, Optional, Tuple

Prompt = Tuple[Optional[str], Optional[List[int]]]


def _is_ids(x):
    return isinstance(x, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in x)


def parse_prompt(p: Any) -> Prompt:
    """One prompt -> (text, token_ids): token ids win when both are given (the text is
    then only reported back as RequestOutput.prompt)."""
    if isinstance(p, str):
        return p, None
    if isinstance(p, dict):
        extra = set(p) - {"prompt", "prompt_token_ids"}
        if extra:
            raise NotImplementedError("prompt field(s) %s not supported by pagellm "
                                      "(text and token-id prompts only)" % sorted(extra))
        ids = p.get("prompt_token_ids")
        text = p.get("prompt")
        if ids is not None:
            if not _is_ids(ids):
                raise TypeError("prompt_token_ids must be a list of int")
            return (text if isinstance(text, str) else None), list(ids)
        if isinstance(text, str):
            return text, None
        raise TypeError("a prompt dict needs 'prompt' (str) or 'prompt_token_ids' (list of int)")
    if _is_ids(p) and len(p) > 0:
        return None, list(p)
    raise TypeError("a prompt is a str, a list of int, or a dict with 'prompt' or "
                    "'prompt_token_ids'; got %r" % (type(p).__name__,))


def parse_prompts(prompts: Any) -> List[Prompt]:
    """One prompt or a sequence of them -> a list of (text, token_ids)."""
    if isinstance(prompts, (str, dict)):
        return [parse_prompt(prompts)]
    if isinstance(prompts, (list, tuple)):
        if len(prompts) > 0 and _is_ids(prompts):
            return [parse_prompt(prompts)]
        return [parse_prompt(p) for p in prompts]
    raise TypeError("prompts must be a str, a dict, a list of int, or a list of these; got %s"
                    % type(prompts).__name__)


def parse_conversations(messages: Any) -> List[list]:
    """LLM.chat's messages: one conversation (a list of message dicts) or a list of them.
    Content given as parts is joined the way vLLM's "string" content format does (text
    parts, one per line)."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of message dicts, or a list of such lists")
    convs = messages if (messages and isinstance(messages[0], (list, tuple))) else [messages]
    out = []
    for conv in convs:
        msgs = []
        for m in conv:
            if not isinstance(m, dict) or "role" not in m:
                raise TypeError("a chat message is a dict with 'role' and 'content'")
            m = dict(m)
            c = m.get("content")
            if isinstance(c, (list, tuple)):
                texts = []
                for part in c:
                    if isinstance(part, str):
                        texts.append(part)
                    elif isinstance(part, dict) and part.get("type") == "text":
                        texts.append(part.get("text", ""))
                    else:
                        raise NotImplementedError(
                            "chat content part %r is not supported by pagellm (text only)"
                            % (part.get("type") if isinstance(part, dict) else part,))
                m["content"] = "\n".join(texts)
            msgs.append(m)
        out.append(msgs)
    return out
