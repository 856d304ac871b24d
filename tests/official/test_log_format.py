"""Our log lines start with the official fields: the official parsers' patterns read them."""
import torch
import torch.nn.functional as F

from resnest_engine.engine import create_evaluator, create_trainer
from resnest_engine.handlers import TrainLogger, Validation
from resnest_engine.official import BATCH_LINE, EPOCH_LINE, VALIDATION_LINE
from resnest_engine.official.log_format import validation_line



def test_train_logger_and_validation_lines_match_the_official_patterns(log_file, tiny_model,
                                                                       loader):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy)
    TrainLogger(every=1, optimizer=opt).attach(trainer)
    Validation({"raw": create_evaluator(model)}, loader(n=8, batch_size=4, seed=1)).attach(trainer)
    trainer.run(loader(n=8, batch_size=4), max_epochs=2)

    text = log_file.read_text()
    assert [int(step) for step, _, _ in BATCH_LINE.findall(text)] == [1, 2, 1, 2]
    assert [int(epoch) for epoch, _ in EPOCH_LINE.findall(text)] == [0, 1]  # 0-based
    assert len(VALIDATION_LINE.findall(text)) == 2


def test_validation_line_is_the_official_eval_output():
    line = validation_line(81.03, 95.4249)
    assert line == "Validation: Top1: 81.030 | Top5: 95.425"
    assert VALIDATION_LINE.fullmatch(line).groups() == ("81.030", "95.425")
