"""tokenizer -- the model's tokenizer as LLM.get_tokenizer() returns it.

Owns: a transformers-like face (encode, decode, apply_chat_template, __call__) over
the C library's tokenizer, which matches Hugging Face's for the same files.
"""
from typing import Any, Dict, List, Optional, Union


class Tokenizer:
    def __init__(self, core, name_or_path):
        self._core = core
        self.name_or_path = name_or_path

    @property
    def vocab_size(self) -> int:
        return self._core.vocab_size

    def __len__(self):
        return self._core.vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return self._core.encode(text, add_special_tokens)

    def __call__(self, text, add_special_tokens: bool = True) -> Dict[str, Any]:
        if isinstance(text, str):
            return {"input_ids": self.encode(text, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}

    def decode(self, token_ids: List[int], skip_special_tokens: bool = True) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        return self._core.decode(token_ids, skip_special_tokens)

    def batch_decode(self, sequences: List[List[int]], skip_special_tokens: bool = True):
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def apply_chat_template(self, conversation, tools: Optional[list] = None,
                            chat_template: Optional[str] = None,
                            add_generation_prompt: bool = False,
                            continue_final_message: bool = False, tokenize: bool = True,
                            **kwargs) -> Union[str, List[int], list]:
        """transformers' apply_chat_template: the rendered prompt, or (tokenize, the
        default as in transformers) its token ids. conversation: a list of messages, or
        a list of conversations (then a list of results). Extra keyword arguments become
        template variables."""
        from .inputs import parse_conversations
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        convs = parse_conversations(conversation)
        for k in ("padding", "truncation", "max_length", "return_tensors", "return_dict"):
            if kwargs.pop(k, None):
                raise NotImplementedError("apply_chat_template(%s=...) is not supported" % k)
        if tools is not None:
            kwargs["tools"] = tools
        res = self._core.apply_chat_template(convs, add_generation_prompt,
                                             continue_final_message, chat_template, kwargs,
                                             tokenize)
        if tokenize:
            res = [ids for _, ids in res]
        return res if batched else res[0]
