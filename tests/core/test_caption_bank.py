"""The model's caption bank is encoded once per model, not once per index."""
import numpy as np

from duch_desktop.core.archive import captions
from duch_desktop.core.archive.archive import Archive
from tests.conftest import TinyTextEncoder, make_tile_folder, run_job


def _index(tmp_path, name, tiny_model_dir, tiny_encoders, text):
    folder = tmp_path / f"{name}-tiles"
    make_tile_folder(folder)
    arch = Archive.open(tmp_path / name, model=tiny_model_dir, image_encoder=tiny_encoders.image,
                        text_encoder=text, create_root=folder)
    run_job(arch.index(workers=0, batch_size=4))
    return arch


def test_a_second_index_reuses_the_caption_bank_of_the_first(tmp_path, tiny_model_dir, tiny_encoders):
    first_text, second_text = TinyTextEncoder(), TinyTextEncoder()
    first = _index(tmp_path, "a", tiny_model_dir, tiny_encoders, first_text)
    second = _index(tmp_path, "b", tiny_model_dir, tiny_encoders, second_text)
    bank = len(captions.read_caption_texts(tiny_model_dir / "captions.json"))
    probe = 1  # each new index runs the model once on a probe text before it changes (checks.check_model)
    assert first_text.texts == bank + probe and second_text.texts == probe
    assert first.stats().captions == second.stats().captions == bank
    assert [(h.text, h.distance) for h in first.captions_for(1)] == [(h.text, h.distance) for h in second.captions_for(1)]
    first.close(), second.close()


def test_a_damaged_bank_cache_is_encoded_again(tmp_path, tiny_model_dir, tiny_encoders):
    _index(tmp_path, "a", tiny_model_dir, tiny_encoders, TinyTextEncoder()).close()
    for f in captions.caption_bank_dir().glob("*.npy"):
        f.write_bytes(b"\x93NUMPY garbage")
    text = TinyTextEncoder()
    arch = _index(tmp_path, "b", tiny_model_dir, tiny_encoders, text)
    assert text.texts > 0 and arch.stats().captions > 0
    codes = [np.load(f) for f in captions.caption_bank_dir().glob("*.npy")]
    assert codes and all(c.dtype == np.uint8 for c in codes)
    arch.close()
