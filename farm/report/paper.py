"""Reference numbers of the paper (Tao et al., CVPR'22), transcribed from METHODS.md §3.

Data only: each table of ``farm tables`` prints these beside the run's own numbers, marked
with their source so nobody mistakes them for measurements of this run. Values are as the
paper reports them (ASR in %, sizes in pixels, times in the paper's units).
"""
from __future__ import annotations

SOURCE = "paper (Tao et al. CVPR'22), METHODS.md §3"

# The methods each paper table compares, by registered name: a fact of the paper, not of the
# methods (their own metadata, such as which ones are ablations, lives where they register).
OURS = "ours"  # the paper's method: the reference of alignment, Fig 8 and Table 6
TABLE4_METHODS = ("ours", "nc", "nc_prune", "abs", "cw", "uap")
FIG8_METHODS = ("ours", "cw")
TABLE5_METHODS = ("ours", "nc", "nc_prune")
TABLE9_METHODS = ("uap", "nc", "ours")

# Fig 8: speed-up of ours over CW to the final best trigger, all pairs.
FIG8_SPEEDUP = [
    {"dataset": "CIFAR-10", "speedup_vs_cw": 10.88, "source": "Fig 8"},
    {"dataset": "SVHN", "speedup_vs_cw": 11.53, "source": "Fig 8"},
]
FIG8_NOTE = "CW needs ~120 s to its first feasible trigger, then shrinks in steps (Fig 8)."

# Table 4: ImageNet turtle->kangaroo; time unit unstated (likely min). Server | Desktop.
TABLE4 = [
    {"method": "uap", "machine": "server", "time": 22.69, "pixels": 50173, "asr": 2.0},
    {"method": "nc", "machine": "server", "time": 9.02, "pixels": 26583, "asr": 28.0},
    {"method": "ours", "machine": "server", "time": 4.27, "pixels": 822, "asr": 70.0},
    {"method": "uap", "machine": "desktop", "time": 21.12, "pixels": 50170, "asr": 2.0},
    {"method": "nc", "machine": "desktop", "time": 10.62, "pixels": 17516, "asr": 20.0},
    {"method": "ours", "machine": "desktop", "time": 5.40, "pixels": 818, "asr": 70.0},
]

# Table 5: ASR % (augmented generation) under transforms; columns as ROBUST_ORDER.
ROBUST_ORDER = ["normal", "r98", "r96", "r88", "r80", "rot1", "rot2", "rot3", "rot4", "rot5"]
TABLE5 = {
    ("snowbird", "nc"): ([80, 74, 46, 0, 0, 82, 46, 8, 8, 2], 34.60),
    ("snowbird", "nc_prune"): ([64, 44, 16, 0, 0, 50, 18, 0, 0, 0], 14.22),
    ("snowbird", "ours"): ([78, 66, 64, 16, 6, 74, 26, 18, 4, 4], 35.60),
    ("robin", "nc"): ([80, 70, 56, 16, 12, 68, 50, 20, 18, 10], 40.00),
    ("robin", "nc_prune"): ([42, 38, 22, 6, 4, 32, 18, 4, 6, 4], 17.60),
    ("robin", "ours"): ([84, 78, 70, 46, 32, 80, 46, 40, 20, 12], 50.80),
    ("grouse", "nc"): ([82, 70, 48, 0, 0, 70, 6, 2, 0, 0], 27.80),
    ("grouse", "nc_prune"): ([76, 68, 42, 0, 0, 54, 4, 2, 0, 0], 18.89),
    ("grouse", "ours"): ([82, 70, 68, 30, 28, 78, 42, 28, 24, 24], 47.40),
    ("kangaroo", "nc"): ([80, 72, 52, 0, 0, 74, 38, 34, 28, 20], 39.80),
    ("kangaroo", "nc_prune"): ([66, 46, 28, 0, 0, 52, 24, 16, 18, 8], 21.33),
    ("kangaroo", "ours"): ([78, 70, 60, 50, 34, 76, 54, 52, 48, 40], 56.20),
}
TABLE5_MEANS = {"ours": 47.50, "nc": 35.55, "nc_prune": 18.01}
TABLE5_NOTE = ("Prune Avg for Snowbird/Grouse/Kangaroo is the mean of the 9 transformed columns only "
               "(Robin: all 10); inconsistent in the source.")

# Table 6: CIFAR-10 ResNet20 plane->dog, 10 runs: (#px mean, std, ASR % mean, std).
TABLE6 = {
    "ours": (38.70, 5.10, 80.07, 3.96),
    "ours_no_tanh": (46.40, 10.07, 79.73, 2.11),
    "ours_single_positive": (84.50, 12.24, 72.64, 3.82),
    "ours_single_variable": (1024.00, 0.00, 90.99, 4.40),
    "ours_no_tanh_single": (1023.10, 0.88, 88.39, 4.85),
}

# Anomaly indices [S-L.2] (Table 3 of the main text is not in the seed).
ANOMALY = [
    {"setting": "invisible backdoor, CIFAR-10", "method": "nc", "anomaly_index": 0.77},
    {"setting": "invisible backdoor, CIFAR-10", "method": "ours", "anomaly_index": 2.28},
    {"setting": "blind backdoor, MNIST (robust training)", "method": "ours", "anomaly_index": 3.37},
    {"setting": "blind backdoor, MNIST (robust training)", "method": "nc", "anomaly_index": 3.04},
]

# Table 9: ImageNet ResNet50 sampled pairs; per method (minutes, #px, ASR %); None = lost in source.
TABLE9 = [
    ("bullfrog", "robin", {"uap": (10.28, 50175, 0), "nc": (9.20, 26016, 28), "ours": (3.69, 489, 50)}),
    ("gorilla", "tench", {"uap": (12.37, 50173, 0), "nc": (9.19, 26803, 10), "ours": None}),
    ("gorilla", "goldfish", {"uap": (12.63, 50174, 0), "nc": (9.19, 26532, 50), "ours": None}),
    ("gorilla", "hammerhead", {"uap": (12.79, 50173, 0), "nc": (9.11, 26854, 30), "ours": (4.54, 643, 54)}),
    ("treefrog", "goldfish", {"uap": (13.21, 50175, 44), "nc": (9.20, 26714, 48), "ours": (4.04, 551, 58)}),
    ("treefrog", "tiger shark", {"uap": (12.70, 50175, 14), "nc": (9.21, 27383, 28), "ours": (4.12, 967, 58)}),
    ("peacock", "ostrich", {"uap": (13.04, 50175, 0), "nc": (9.47, 29800, 12), "ours": (4.29, 1447, 54)}),
    ("peacock", "bulbul", {"uap": (12.70, 50171, 0), "nc": (9.37, 28882, 50), "ours": (None, 1512, 62)}),
    ("chihuahua", "partridge", {"uap": (10.45, 50175, 0), "nc": (9.19, 26228, 36), "ours": (3.77, 666, 54)}),
    ("chihuahua", "isopod", {"uap": (10.35, 50173, 8), "nc": (9.27, 26397, 26), "ours": (3.69, 626, 56)}),
]

# Alignment figures: mean held-out ASR % (cut = other trigger pruned to ours' size).
ALIGN_SIZE = [
    {"figure": "Fig 9", "dataset": "CIFAR-10", "other": "uap", "asr_other_cut": 0.96, "asr_other": 68.21,
     "asr_ref": None},
    {"figure": "Fig 13", "dataset": "SVHN", "other": "nc", "asr_other_cut": 75.87, "asr_other": 76.55,
     "asr_ref": 83.18},
    {"figure": "Fig 13", "dataset": "SVHN", "other": "uap", "asr_other_cut": 0.51, "asr_other": 18.76,
     "asr_ref": 83.18},
]
ALIGN_ASR_NOTE = ("Fig 10/14 (align by ASR): NC ~10x larger than ours (SVHN, except 6->5, 3->8); "
                  "UAP changes ~all pixels, ours ~100x fewer.")
SG_ABS = "[S-G] CIFAR-10 ResNet20 plane->car: ABS 84 px / 38%; ours 38 px / 78%; ABS cut to 38 px: 16%."
