"""The typed recipe (DESIGN.md §3): YAML in, a strict pydantic v2 model out, one class per task.

One schema, several faces: the YAML file, ``--set a.b=c`` overrides and the Python API all pass
through :func:`load_recipe` / :func:`parse_recipe`. Keys depend on ``task`` (data and train
sections) and on ``model.arch`` (the model section); a key that does not apply is an error that
names its YAML path. Defaults depend on both and are filled in before validation, so
``tensorsmith validate`` prints the fully resolved recipe with only the keys that apply.

No torch import here: this is layer L0.
"""

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.finetune import FinetuneSpec, LoraSpec, RoundPolicy
from tensorsmith.recipe.images import (
    AugmentSpec,
    ImageClassificationRecipe,
    ImageData,
    ImageSpec,
)
from tensorsmith.recipe.language import CorpusData, LanguageModelingRecipe, StepTrain
from tensorsmith.recipe.models import (
    CNNSpec,
    GPTSpec,
    HFCausalSpec,
    HFEncoderSpec,
    LinearSpec,
    MLPSpec,
    ModelSpec,
    RNNSpec,
    TransformerSpec,
)
from tensorsmith.recipe.parse import (
    RECIPES,
    apply_overrides,
    load_recipe,
    load_yaml,
    parse_recipe,
    recipe_to_yaml,
)
from tensorsmith.recipe.sections import (
    EarlyStoppingSpec,
    EvaluateSpec,
    OptimizerSpec,
    ScheduleSpec,
    SplitSpec,
    TrainSpec,
)
from tensorsmith.recipe.sequences import (
    ForecastData,
    LabelledSequenceData,
    SequenceClassificationRecipe,
    SequenceRegressionRecipe,
    SequenceSplit,
    TimeSplit,
)
from tensorsmith.recipe.tables import (
    ClassificationRecipe,
    ClassificationTrain,
    RegressionData,
    RegressionRecipe,
    TableData,
    TableTrain,
)
from tensorsmith.recipe.text import (
    TextClassificationRecipe,
    TextData,
    TextRegressionRecipe,
    TextTokenizerSpec,
)

__all__ = [
    "RECIPES",
    "AugmentSpec",
    "CNNSpec",
    "ClassificationRecipe",
    "ClassificationTrain",
    "CorpusData",
    "DataSpec",
    "EarlyStoppingSpec",
    "EvaluateSpec",
    "FinetuneSpec",
    "ForecastData",
    "GPTSpec",
    "HFCausalSpec",
    "HFEncoderSpec",
    "ImageClassificationRecipe",
    "ImageData",
    "ImageSpec",
    "LabelledSequenceData",
    "LanguageModelingRecipe",
    "LinearSpec",
    "LoraSpec",
    "MLPSpec",
    "ModelSpec",
    "OptimizerSpec",
    "RNNSpec",
    "Recipe",
    "RegressionData",
    "RegressionRecipe",
    "RoundPolicy",
    "ScheduleSpec",
    "SequenceClassificationRecipe",
    "SequenceRegressionRecipe",
    "SequenceSplit",
    "SplitSpec",
    "StepTrain",
    "TableData",
    "TableTrain",
    "TextClassificationRecipe",
    "TextData",
    "TextRegressionRecipe",
    "TextTokenizerSpec",
    "TimeSplit",
    "TrainSpec",
    "TransformerSpec",
    "apply_overrides",
    "load_recipe",
    "load_yaml",
    "parse_recipe",
    "recipe_to_yaml",
]
