# The office preset under the per-variant studies' protocol (their trial 0), seeds 0-2 with
# test scored: the pair for runs/check-office-sigma-t4.
OMP_NUM_THREADS=1 .venv/bin/sigma-pyro compare --data ../shared/data/Office_Products.txt --preset office \
    --priors sigma,normal --seeds 3 --early-stop-metric ndcg@20 --iwae-samples 0 --no-progress --jobs 2 \
    --out runs/check-office-preset
