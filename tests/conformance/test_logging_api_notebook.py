"""Azure's "logging API" notebook (Azure/MachineLearningNotebooks,
``how-to-use-azureml/track-and-monitor-experiments/logging-api/logging-api.ipynb``, SDK 1.53),
cell by cell in its order. Only ``azureml`` imports change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conformance.conftest import Document

COLUMNS = [
    "expected", "actual", "calculated", "inferred", "determined", "predicted", "forecast",
    "speculated", "assumed", "required", "intended", "deduced", "theorized", "hoped",
    "hypothesized",
]  # fmt: skip


def test_cell_01_imports_and_version(document: Document) -> None:
    printed = document.run("""
from azureml.core import Experiment, Workspace, Run
import azureml.core
import numpy as np
from tqdm import tqdm

# Check core SDK version number

print("This notebook was created using SDK version 1.53.0, you are currently running version", azureml.core.VERSION)
""")
    assert printed.endswith("you are currently running version 0.1.0\n")


def test_cell_02_workspace_details(document: Document) -> None:
    """Seen: ``ws.location`` and the others did not exist."""
    printed = document.run("""
ws = Workspace.from_config()
print('Workspace name: ' + ws.name, 
      'Azure region: ' + ws.location, 
      'Subscription id: ' + ws.subscription_id, 
      'Resource group: ' + ws.resource_group, sep='\\n')
""")
    assert printed.splitlines()[:2] == [
        "Workspace name: runyard",
        f"Azure region: {document.stack.url}",
    ]


def test_cell_03_experiment(document: Document) -> None:
    document.run("experiment = Experiment(workspace=ws, name='logging-api-test')")


def test_cell_04_start_logging(document: Document) -> None:
    document.run("""
# start logging for the run
run = experiment.start_logging()

# access the run id for use later
run_id = run.id

# change the scale factor on different runs to see how you can compare multiple runs
scale_factor = 2

# change the category on different runs to see how to organize data in reports
category = 'Red'
""")
    assert document["run"].get_status() == "Running"


def test_cell_05_the_run_displays_itself(document: Document) -> None:
    assert document["run_id"] in document.run("run")


def test_cell_06_the_experiment_displays_itself(document: Document) -> None:
    assert "logging-api-test" in document.run("experiment")


def test_cell_07_a_string_metric(document: Document) -> None:
    document.run("""
# log a string metric
run.log(name='Category', value=category)
""")


def test_cell_08_numbers(document: Document) -> None:
    document.run("""
# log numerical values
run.log(name="scale factor", value = scale_factor)
run.log(name='Magic Number', value=42 * scale_factor)
""")


def test_cell_09_a_list_and_a_repeated_metric(document: Document) -> None:
    document.run("""
fibonacci_values = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
scaled_values = (i * scale_factor for i in fibonacci_values)

# Log a list of values. Note this will generate a single-variable line chart.
run.log_list(name='Fibonacci', value=scaled_values)

for i in tqdm(range(-10, 10)):
    # log a metric value repeatedly, this will generate a single-variable line chart.
    run.log(name='Sigmoid', value=1 / (1 + np.exp(-i)))
    
""")


def test_cell_10_rows_and_a_table(document: Document) -> None:
    document.run("""
# create a dictionary to hold a table of values
sines = {}
sines['angle'] = []
sines['sine'] = []

for i in tqdm(range(-10, 10)):
    angle = i / 2.0 * scale_factor
    
    # log a 2 (or more) values as a metric repeatedly. This will generate a 2-variable line chart if you have 2 numerical columns.
    run.log_row(name='Cosine Wave', angle=angle, cos=np.cos(angle))
        
    sines['angle'].append(angle)
    sines['sine'].append(np.sin(angle))

# log a dictionary as a table, this will generate a 2-variable chart if you have 2 numerical columns
run.log_table(name='Sine Wave', value=sines)
""")


def test_cell_11_a_plot(document: Document) -> None:
    document.run("""
%matplotlib inline

# Create a plot
import matplotlib.pyplot as plt
angle = np.linspace(-3, 3, 50) * scale_factor
plt.plot(angle,np.tanh(angle), label='tanh')
plt.legend(fontsize=12)
plt.title('Hyperbolic Tangent', fontsize=16)
plt.grid(True)

# Log the plot to the run.  To log an arbitrary image, use the form run.log_image(name, path='./image_path.png')
run.log_image(name='Hyperbolic Tangent', plot=plt)
""")


def test_cell_12_three_thousand_rows_of_fifteen_columns(document: Document) -> None:
    document.run("""
import random
metricNames = [ "Accuracy", "Precision", "Recall" ]
columnNames = [ "expected", "actual", "calculated", "inferred", "determined", "predicted", "forecast", "speculated", "assumed", "required", "intended", "deduced", "theorized", "hoped", "hypothesized" ]

for step in range(1000):
    for metricName in metricNames:

        metricKeyValueDictionary={}
        for column in columnNames:
            metricKeyValueDictionary[column] = random.randrange(0, step + 1)

        run.log_row(
            metricName,
            "Example row for metric " + metricName,
            **metricKeyValueDictionary)
""")


def test_cell_13_upload_a_file(document: Document) -> None:
    document.run("""
import os
directory = 'logging-api'

if not os.path.exists(directory):
    os.mkdir(directory)

file_name = os.path.join(directory, "myfile.txt")

with open(file_name, "w") as f:
    f.write('This is an output file that will be uploaded.\\n')

# Upload the file explicitly into artifacts 
run.upload_file(name = file_name, path_or_stream = file_name)
""")
    assert "logging-api/myfile.txt" in document["run"].get_file_names()


def test_cell_14_complete(document: Document) -> None:
    document.run("run.complete()")
    assert document["run"].get_status() == "Completed"


def test_cell_15_fetch_the_run(document: Document) -> None:
    printed = document.run("""
fetched_run = Run(experiment, run_id)
fetched_run
""")
    assert document["run_id"] in printed


def test_cell_16_every_metric(document: Document) -> None:
    """Everything logged before ``complete()`` is there, in Azure's shapes."""
    document.run("fetched_run.get_metrics()")
    metrics = document["_"]
    assert metrics["Category"] == "Red"
    assert metrics["scale factor"] == 2 and metrics["Magic Number"] == 84
    assert metrics["Fibonacci"] == [2 * v for v in (0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)]
    assert metrics["Sigmoid"] == pytest.approx([1 / (1 + math.exp(-i)) for i in range(-10, 10)])
    angles = [i / 2.0 * 2 for i in range(-10, 10)]
    assert metrics["Cosine Wave"] == {
        "angle": angles,
        "cos": pytest.approx([float(np.cos(a)) for a in angles]),
    }
    assert metrics["Sine Wave"]["angle"] == angles
    assert metrics["Hyperbolic Tangent"].endswith(".png")
    for name in ("Accuracy", "Precision", "Recall"):
        assert sorted(metrics[name]) == sorted(COLUMNS)
        assert all(len(values) == 1000 for values in metrics[name].values())


def test_cell_17_one_metric(document: Document) -> None:
    document.run('fetched_run.get_metrics(name = "scale factor")')
    assert document["_"] == {"scale factor": 2}


def test_cell_18_file_names(document: Document) -> None:
    document.run("fetched_run.get_file_names()")
    names = document["_"]
    assert "logging-api/myfile.txt" in names
    assert (
        document["fetched_run"].get_metrics(name="Hyperbolic Tangent")["Hyperbolic Tangent"]
        in names
    )


def test_cell_19_download_every_file(document: Document) -> None:
    printed = document.run("""
os.makedirs('files', exist_ok=True)

for f in run.get_file_names():
    dest = os.path.join('files', f.split('/')[-1])
    print('Downloading file {} to {}...'.format(f, dest))
    fetched_run.download_file(f, dest)   
""")
    assert "Downloading file logging-api/myfile.txt to files/myfile.txt..." in printed
    assert (document.folder / "files" / "myfile.txt").read_text() == (
        "This is an output file that will be uploaded.\n"
    )


def test_cell_20_tag_a_fetched_run(document: Document) -> None:
    """Seen: ``get_tags()`` right after ``tag()`` on a fetched run gave {}."""
    document.run("""
fetched_run.tag("My Favorite Run")
fetched_run.tag("Competition Rank", 1)

fetched_run.get_tags()
""")
    assert document["_"] == {"My Favorite Run": None, "Competition Rank": "1"}
