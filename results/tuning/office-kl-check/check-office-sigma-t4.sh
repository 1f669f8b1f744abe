# The sigma study's best trial (4) on 3 seeds with test scored, and normal with the same KL
# schedule (the sigma-only knobs do nothing to normal): is the gain the mixture prior's or
# the stronger KL's, and is it more than one seed's luck?
OMP_NUM_THREADS=1 .venv/bin/sigma-pyro compare --data ../shared/data/Office_Products.txt --preset office \
    --priors sigma,normal --seeds 3 --early-stop-metric ndcg@20 --iwae-samples 0 --no-progress --jobs 2 \
    --kl-cap 0.08258378540619908 --kl-anneal-steps 10185 --kl-free-bits 30 --num-interests 2 \
    --interest-weight-start 0.2374154536318848 --interest-weight-end 0.0002760251639014497 \
    --out runs/check-office-sigma-t4
