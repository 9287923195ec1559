"""Training system: steps lower the loss, exact resume, 2-process DDP (gloo) equals one process."""

import dataclasses
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from referdino.cli import main
from referdino.synth import generate_world
from referdino.training.config import ConfigError, resolve_train_config
from referdino.training.trainer import Trainer

NO_DROP = ["model.fusion_drop_path=0", "model.swin.drop_path=0", "model.text.dropout=0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_world(root, videos=2, seed=3)
    return root


def _config(world, out, *extra):
    return resolve_train_config("synthetic_tiny", [f"data_root={world}", f"out_dir={out}", "num_frames=3", *extra])


def test_steps_lower_the_loss_on_a_fixed_batch(world, tmp_path):
    trainer = Trainer(_config(world, tmp_path, "lr=1e-3", "warmup_steps=0", *NO_DROP), progress=False)
    batch = trainer.collate_fn([trainer.dataset[(0, 0)], trainer.dataset[(0, 1)]])
    losses = [trainer.train_step(batch)["loss"] for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_continues_exactly(world, tmp_path):
    full = Trainer(_config(world, tmp_path / "a", "max_steps=4", "ckpt_every=2"), progress=False)
    reference = full.fit().history
    first = Trainer(_config(world, tmp_path / "b", "max_steps=2", "ckpt_every=2"), progress=False)
    first.fit()
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file()
    resumed = Trainer(_config(world, tmp_path / "b", "max_steps=4", "ckpt_every=2"), progress=False)
    resumed.resume()
    history = resumed.fit().history
    assert len(history) == 4
    for want, got in zip(reference[2:], history[2:]):
        assert want["loss"] == pytest.approx(got["loss"], rel=1e-5, abs=1e-6), (want, got)
    for want, got in zip(reference[:2], history[:2]):
        assert want == got  # history travels with the checkpoint


def test_warmup_scales_the_first_steps_only(world, tmp_path):
    trainer = Trainer(_config(world, tmp_path, "lr=1e-3", "warmup_steps=3"), progress=False)
    batch = trainer.collate_fn([trainer.dataset[(0, 0)]])
    applied = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        applied.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    for _ in range(4):
        trainer.train_step(batch)
        trainer.state.global_step += 1
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the schedule's own value
    assert applied == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])


def test_resume_from_another_config_is_rejected(world, tmp_path):
    Trainer(_config(world, tmp_path, "max_steps=1", "ckpt_every=1"), progress=False).fit()
    other = Trainer(_config(world, tmp_path, "model.temporal_layers=1"), progress=False)
    with pytest.raises(Exception, match="another model configuration"):
        other.resume()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, config, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from referdino.training.distributed import cleanup

    trainer = Trainer(config, progress=False)
    batch = trainer.collate_fn([trainer.dataset[key] for key in list(iter(trainer.sampler))[: config.batch_size]])
    losses = trainer.train_step(batch)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"losses": losses, "grads": grads}, result_path)
    cleanup()


def test_two_process_ddp_step_equals_single_process(world, tmp_path):
    common = ["lr=0", *NO_DROP]
    single_cfg = _config(world, tmp_path / "single", "batch_size=2", *common)
    single = Trainer(single_cfg, progress=False)
    keys = list(iter(single.sampler))[:2]
    single_losses = single.train_step(single.collate_fn([single.dataset[k] for k in keys]))
    single_grads = {n: p.grad for n, p in single.model.named_parameters() if p.grad is not None}

    ddp_cfg = dataclasses.replace(single_cfg, batch_size=1, out_dir=str(tmp_path / "ddp"))
    ctx = mp.get_context("spawn")
    port = _free_port()
    result = tmp_path / "rank0.pt"
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, ddp_cfg, str(result))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    saved = torch.load(result, weights_only=True)
    losses, grads = saved["losses"], saved["grads"]
    assert losses["loss"] == pytest.approx(single_losses["loss"], rel=1e-4)
    assert set(grads) == set(single_grads)
    # relative to each tensor's scale, floored at 1e-3 of the largest gradient: some gradients are zero in exact
    # arithmetic (a key bias under softmax, a conv bias before GroupNorm) and are pure rounding noise
    floor = 1e-3 * max(g.abs().max().item() for g in single_grads.values())
    errors = {n: ((grads[n] - g).abs().max() / max(g.abs().max().item(), floor)).item() for n, g in single_grads.items()}
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert worst[0][1] < 1e-3, worst


def test_bad_training_inputs_are_one_line_errors(world, tmp_path, capsys):
    assert main(["train", "synthetic_tiny", f"data_root={tmp_path / 'missing'}", f"out_dir={tmp_path}"]) == 2
    assert main(["train", "synthetic_tiny", "lr=fast"]) == 2
    assert main(["train", "synthetic_tiny", "no_such_key=1"]) == 2
    assert main(["train", "synthetic_tiny", f"data_root={world}", f"out_dir={tmp_path / 'r'}", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("referdino train: error:") for line in err), err
    with pytest.raises(ConfigError):
        resolve_train_config("synthetic_tiny", ["model.lora.rank=many"])


def test_bf16_autocast_training_on_the_cpu(world, tmp_path):
    trainer = Trainer(_config(world, tmp_path, "lr=1e-3", "warmup_steps=0", "amp=bf16", *NO_DROP), progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    batch = trainer.collate_fn([trainer.dataset[(0, 0)], trainer.dataset[(0, 1)]])
    losses = [trainer.train_step(batch)["loss"] for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    assert next(trainer.model.parameters()).dtype == torch.float32  # autocast: the weights stay float32


def test_amp_values(world, tmp_path):
    assert _config(world, tmp_path, "amp=true").amp == "fp16"  # the official enable_amp
    assert _config(world, tmp_path, "amp=false").amp == "off"
    with pytest.raises(ConfigError, match="amp"):
        _config(world, tmp_path, "amp=fp8")
    with pytest.raises(ValueError, match="CUDA"):
        Trainer(_config(world, tmp_path, "amp=fp16", "device=cpu"), progress=False)


def test_lr_drops_once_the_time_fraction_is_spent(world, tmp_path):
    trainer = Trainer(_config(world, tmp_path, "lr=1e-3", "warmup_steps=0", "max_minutes=10", "lr_drop_time=0.5",
                              "lr_gamma=0.1"), progress=False)
    trainer.state.seconds = 4 * 60.0  # an earlier run spent 4 of the 10 minutes: before the drop
    assert trainer._lr_factor() == pytest.approx(1.0)
    trainer.state.seconds = 5 * 60.0  # half the budget spent (counted over resumes): dropped
    assert trainer._lr_factor() == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="max_minutes"):
        resolve_train_config("synthetic_tiny", ["lr_drop_time=0.5"]).validate()


def test_video_phase_starts_from_an_official_temporal_decoder(world, tmp_path):
    """init_weights of a model without the motion encoding: everything loads, the encoding starts fresh."""
    from referdino.modeling.referdino import ReferDino

    official = Trainer(_config(world, tmp_path / "a"), progress=False).model
    official.save_pretrained(tmp_path / "official")
    trainer = Trainer(_config(world, tmp_path / "b", f"init_weights={tmp_path / 'official'}",
                              "model.temporal_position=time_box"), progress=False)
    assert trainer.model.temporal_decoder.motion is not None
    for name, value in official.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, msg=name)
    assert isinstance(trainer.model, ReferDino)


def test_init_weights_ignores_options_without_weights(world, tmp_path):
    """A model folder trained with another tracker setting initialises a run (the tracker has no weights);
    another architecture is still refused."""
    source = Trainer(_config(world, tmp_path / "a", "model.tracker_box_cost=0"), progress=False).model
    source.save_pretrained(tmp_path / "source")
    trainer = Trainer(_config(world, tmp_path / "b", f"init_weights={tmp_path / 'source'}",
                              "model.tracker_box_cost=5", "model.tracking_alpha=0.2"), progress=False)
    assert trainer.model.config.tracker_box_cost == 5.0 and trainer.model.config.tracking_alpha == 0.2
    for name, value in source.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, msg=name)
    with pytest.raises(Exception, match="another model configuration"):
        Trainer(_config(world, tmp_path / "c", f"init_weights={tmp_path / 'source'}", "model.mask_layers=1"),
                progress=False)


def test_fused_adamw_on_the_cpu_matches_the_multi_tensor_update(world, tmp_path):
    from referdino.training.trainer import optimizer_kernel

    trainer = Trainer(_config(world, tmp_path, "max_steps=1"), progress=False)
    assert trainer.optimizer.defaults["fused"] is True  # the CPU's default AdamW is a per-tensor Python loop
    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    updated = []
    for kernel in (optimizer_kernel(torch.device("cpu")), {"foreach": True}):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, **kernel)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        updated.append([p.detach() for p in params])
    for fused, foreach in zip(*updated):
        torch.testing.assert_close(fused, foreach, rtol=1e-6, atol=1e-7)


def test_expressions_selects_a_kind_of_a_synthetic_world(world, tmp_path, capsys):
    """`expressions=static` (the learning proof's image phase) trains on the static expressions only: one frame
    cannot tell twins apart by their motion. A folder without expression kinds is a one-line error."""
    import json

    kinds = json.loads((world / "train" / "expression_kinds.json").read_text())
    counts = {k: sum(v == k for exps in kinds.values() for v in exps.values()) for k in ("static", "motion")}
    assert counts["static"] and counts["motion"]
    for kind in ("all", "static", "motion"):
        trainer = Trainer(_config(world, tmp_path / kind, f"expressions={kind}"), progress=False)
        dataset = trainer._build_dataset()[0]
        seen = {kinds[e.video_id][e.expression_id] for e in dataset.expressions}
        assert seen == ({"static", "motion"} if kind == "all" else {kind})
        assert len(dataset.expressions) == (sum(counts.values()) if kind == "all" else counts[kind])
    plain = tmp_path / "plain"
    (plain / "train").mkdir(parents=True)
    for name in ("meta_expressions", "train"):
        src = world / name
        if src.is_dir():
            import shutil

            shutil.copytree(src, plain / name, dirs_exist_ok=True)
    (plain / "train" / "expression_kinds.json").unlink()
    assert main(["train", "synthetic_tiny", f"data_root={plain}", f"out_dir={tmp_path / 'x'}", "expressions=static",
                 "max_steps=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expression_kinds.json not found" in err[0], err
    with pytest.raises(ConfigError, match="expressions"):
        resolve_train_config("synthetic_tiny", ["expressions=twins"])
