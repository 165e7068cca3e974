"""The error layer: user errors reach the terminal as one line, also from data-loader workers."""

import pytest
import torch

from cliplit_basicsr.errors import CLIPLITError, OptionError, exit_on_user_error, one_line_message


class _FailingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise CLIPLITError('image broken.png: not an image')


def test_one_line_message_recovers_the_message_of_a_dataloader_worker_error():
    loader = torch.utils.data.DataLoader(_FailingDataset(), num_workers=1)
    with pytest.raises(CLIPLITError) as error:
        next(iter(loader))
    assert '\n' in str(error.value)  # PyTorch put the worker's traceback into the message
    assert one_line_message(error.value) == 'image broken.png: not an image'


def test_exit_on_user_error_prints_one_line_and_exits_1(capsys):

    @exit_on_user_error
    def entry():
        raise OptionError("options/x.yml: missing option 'name'")

    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: options/x.yml: missing option 'name'\n"
