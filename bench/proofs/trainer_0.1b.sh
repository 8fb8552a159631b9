#!/usr/bin/env bash
# The trainer's proof on the GPU machine (issue 5): a random model in the 0.1B layout
# trains a LoRA on ../shared/data/demo.jsonl at ctx_len 1024, then PyTorch loads every
# output and checks the merge. From the project root, after `source .gpu/enter.sh`,
# with dist/ built: bash bench/proofs/trainer_0.1b.sh
set -euo pipefail
data=${RWKV_SHARED_DATA:-../shared/data}
cli="node dist/cli/main.js"
rm -rf /tmp/proof && mkdir -p /tmp/proof
$cli init --out /tmp/proof/rwkv7-0.1b.pth --n_layer 12 --n_embd 768 --seed 1
$cli prepare "$data/demo.jsonl" --out /tmp/proof/demo --tokenizer "$data/rwkv_vocab_v20230424.txt" --ctx_len 1024
$cli train bench/proofs/trainer_0.1b.json
ls -l /tmp/proof/run
$cli info /tmp/proof/run/rwkv-2.pth
$cli info /tmp/proof/run/rwkv-merged.pth
python3 bench/reference/check_outputs.py /tmp/proof/rwkv7-0.1b.pth /tmp/proof/run/rwkv-2.pth /tmp/proof/run/rwkv-merged.pth
