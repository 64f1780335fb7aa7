"""Convert a Hugging Face checkpoint (Llama / Mistral / Qwen2, safetensors) to a GGUF file.

    python tools/convert.py HF_DIR --outfile model.gguf --outtype q8_0
    ffnskip_native.convert.convert("HF_DIR", "model.gguf", outtype="f16")

Pure Python (numpy + gguf): it never needs the compiled engine. Memory stays near the largest
tensor, and a failure leaves no partial output (see write).

What changes on the way:
- names: HF module paths -> GGUF names (token_embd, blk.N.attn_q, ...);
- llama/mistral q/k rows: HF stores them for rotate-half rope; GGUF llama files for rope on
  adjacent pairs, so each head's rows are re-interleaved (qwen2 keeps NEOX rope: untouched);
- precision: 1-D tensors (norms, biases) stay f32; matrices take --outtype;
- tied embeddings (tie_word_embeddings, or no lm_head): no output.weight.

The modules, in the order a conversion uses them:
- fields: typed reading of every JSON input (type and range of each value, ConvertError otherwise);
- config: config.json -> HParams;
- tensors: the safetensors headers and shards -> TensorRefs (read lazily);
- plan: checkpoint tensors -> output tensors (names, shapes, types, q/k permutation);
- spm_model, bpe_json, vocab_reader: tokenizer files -> a Vocab; vocab: writing it;
- write: the GGUF file itself (convert()); cli: the command line.
"""

from __future__ import annotations

from .cli import main
from .config import ARCHITECTURES, HParams
from .errors import ConvertError
from .plan import OUTTYPES, permute_qk
from .write import convert

__all__ = ["ARCHITECTURES", "OUTTYPES", "ConvertError", "HParams", "convert", "main", "permute_qk"]
