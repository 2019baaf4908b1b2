"""Command line of recbole-mm: any plugin model or stock RecBole model on any data set.

    python run_recbole_mm.py --model=ANT                       # embedded synthetic data
    python run_recbole_mm.py --model=ANT --dataset=Scientific --data_path=../shared/datasets
    python run_recbole_mm.py --model=SASRec --dataset=Scientific --data_path=../shared/datasets --hidden_size=256
    python run_recbole_mm.py --model=ANT --config_files="a.yaml b.yaml" --learning_rate=0.0005
"""

from recbole_mm.cli import main

if __name__ == "__main__":
    main()
