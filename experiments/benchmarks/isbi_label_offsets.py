"""Do the isbi-ceph network's errors carry a systematic per-landmark offset, and is it the network's or the labels'?
Mean (prediction - truth) per landmark on the 25 held-out TrainingData films (val of isbi_seed0) and on the two
seeded halves of Test1Data (isbi_test1_halves); prints the offsets, their correlations, and MRE / SDR@2mm of one
half with the other half's (or val's) offset subtracted. Asserts nothing.

    python experiments/benchmarks/isbi_label_offsets.py
"""
import numpy as np, torch, json
from types import SimpleNamespace
from napari_interactive_landmarks.cli import _dataset_samples
from napari_interactive_landmarks.inference import Predictor
torch.set_num_threads(2)
p = Predictor.from_file("src/napari_interactive_landmarks/weights/isbi-ceph.safetensors")
def run(split, split_file=None):
    ss=_dataset_samples(SimpleNamespace(split=split, dataset="isbi2015", root="../shared/datasets/isbi2015", split_file=split_file, limit=None), p)
    P=np.stack([p.predict(s.load_image(), shape_prior=False).coords for s in ss]); T=np.stack([s.coords for s in ss])
    return P,T
Pv,Tv=run("val","isbi_seed0"); Pc,Tc=run("calib","isbi_test1_halves"); Pe,Te=run("eval","isbi_test1_halves")
ov=(Pv-Tv).mean(0); oc=(Pc-Tc).mean(0); oe=(Pe-Te).mean(0)
print("offset val", (ov*0.1).round(2).tolist()); print("offset calib", (oc*0.1).round(2).tolist()); print("offset eval",(oe*0.1).round(2).tolist())
print("corr val-eval", np.corrcoef(ov.ravel(),oe.ravel())[0,1], "corr calib-eval", np.corrcoef(oc.ravel(),oe.ravel())[0,1])
m=lambda P,T: (np.linalg.norm(P-T,axis=-1)*0.1).mean()
s=lambda P,T: ((np.linalg.norm(P-T,axis=-1)*0.1)<=2).mean()*100
print("eval raw", m(Pe,Te), s(Pe,Te)); print("eval - val offset", m(Pe-ov,Te), s(Pe-ov,Te)); print("eval - calib offset", m(Pe-oc,Te), s(Pe-oc,Te))
print("calib raw", m(Pc,Tc), s(Pc,Tc)); print("calib - eval offset", m(Pc-oe,Tc), s(Pc-oe,Tc))
