"""The data and tokenizer handed to Hugging Face's examples/pytorch/language-modeling/run_clm.py here.

Nothing can be downloaded, so the text is Python's own standard library, read from this machine:
train.txt holds the sources of the modules in TRAIN (about 400 KB), valid.txt those in VALID (other
modules, about 40 KB). The tokenizer is a byte-level BPE with a 512-token vocabulary trained on
train.txt with the `tokenizers` library and saved as a transformers fast tokenizer, so
`--tokenizer_name DIR` loads it offline.

usage: python make_data.py OUT
"""

import os
import sys
import sysconfig

TRAIN = ("argparse", "configparser", "csv", "difflib", "enum", "fractions", "ftplib", "gettext", "heapq",
         "imaplib", "inspect", "ipaddress", "locale", "logging/__init__", "mailbox", "netrc", "optparse",
         "pathlib", "pdb", "pickle", "pprint", "queue", "random", "shlex", "shutil", "smtplib", "statistics",
         "string", "tarfile", "textwrap", "threading", "zipfile")
VALID = ("calendar", "decimal", "colorsys", "bisect", "fnmatch", "glob", "keyword", "sched")


def _text(names, limit):
    lib, out, size = sysconfig.get_paths()["stdlib"], [], 0
    for name in names:
        with open(os.path.join(lib, name + ".py"), encoding="utf-8") as f:
            body = f.read()
        out.append(body)
        size += len(body)
        if size >= limit:
            break
    return "".join(out)[:limit]


def main(out: str) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    for fname, names, limit in (("train.txt", TRAIN, 400_000), ("valid.txt", VALID, 40_000)):
        with open(os.path.join(out, fname), "w", encoding="utf-8") as f:
            f.write(_text(names, limit))
    bpe = ByteLevelBPETokenizer()
    bpe.train([os.path.join(out, "train.txt")], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", model_max_length=128)
    tok.save_pretrained(os.path.join(out, "tokenizer"))
    print(f"{out}: train.txt, valid.txt, tokenizer/ ({len(tok)} tokens)")


if __name__ == "__main__":
    main(sys.argv[1])
