"""``peak_activation_bytes``: the largest number of fp32 values alive at once for one image,
worked out by hand for the block kinds whose bookkeeping differs (a residual projection,
a squeeze-excitation gate, an identity residual around one)."""

from cnnsearch import ArchSpec, check


def peak_values(input_shape, blocks) -> int:
    spec = ArchSpec.from_dict({"input": input_shape, "num_classes": 3, "blocks": blocks, "head": {"pool": "avg"}})
    table = check(spec)
    assert table.peak_activation_bytes % 4 == 0
    return table.peak_activation_bytes // 4


def test_a_downsampling_residual_projection():
    # input 4x4x4 = 64 values; conv (stride 2, no activation) -> 6x2x2 = 24, saving its input
    #   conv1  64 in + 24 out                              = 88
    #   proj1  64 saved input in + 24 out + 24 main path   = 112, the peak (not the saved input twice: 152)
    #   add1   24 main + 24 out + 24 projection            = 72
    assert peak_values([4, 4, 4], [{"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                                    "residual": True, "activation": "none"}]) == 112


def test_a_squeeze_excitation_gate_keeps_the_map_alive():
    # input 64; expand to 8x4x4 = 128: 64 + 128 = 192, then each row 128 + 128 = 256
    #   se_pool 128 map + 8 squeezed = 136; each gate row 128 map + 8 gate in + 8 out = 144
    #   se_scale 128 map + 8 gate + 128 out                = 264 (the peak)
    assert peak_values([4, 4, 4], [{"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "expansion": 2,
                                    "se": True}]) == 264


def test_an_identity_residual_around_a_gate_keeps_the_input_alive():
    # input 8x4x4 = 128, saved for the add; expand to 16x4x4 = 256
    #   expand1 128 + 256 = 384; the expanded rows 256 + 256 + 128 saved = 640
    #   se_scale 256 map + 16 gate + 256 out + 128 saved = 656 (the peak); project 256 + 128 + 128 = 512
    assert peak_values([8, 4, 4], [{"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "expansion": 2,
                                    "se": True}]) == 656


def test_a_plain_stack_is_its_largest_input_and_output():
    # 1x8x8 = 64 -> 4x8x8 = 256 (64 + 256 = 320) -> act 512 -> conv 8x4x4 = 128 (256 + 128 = 384)
    assert peak_values([1, 8, 8], [{"out_channels": 4, "kernel_size": 3, "padding": 1},
                                   {"out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1}]) == 512


def test_a_widening_projection_peaks_at_the_add():
    # input 4x4x4 = 64; conv (no activation) -> 8x4x4 = 128, saving its input
    #   conv1  64 + 128 = 192; proj1 64 saved in + 128 out + 128 main = 320
    #   add1   128 main + 128 projection + 128 out = 384, the peak (the projection, not the saved input)
    assert peak_values([4, 4, 4], [{"out_channels": 8, "kernel_size": 3, "padding": 1, "residual": True,
                                    "activation": "none"}]) == 384


def test_a_gate_is_not_counted_after_its_block():
    # the SE block as above (264 at its scale), then a conv to 32x4x4 = 512: conv2 128 + 512 = 640,
    # act2 512 + 512 = 1024, the peak (the block's gate is no longer alive there)
    assert peak_values([4, 4, 4], [{"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "expansion": 2, "se": True},
                                   {"out_channels": 32, "kernel_size": 3, "padding": 1}]) == 1024
