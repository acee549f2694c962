"""Export (docs/design.md §4): compile a trained model to a chip profile's integer formats, check it
against the chip's limits, save or load the deployment artifact; NIR graphs in and out
(:mod:`neurosim.export.nir_graph`, needs the ``nir`` extra only when called)."""

from neurosim.export.compile import check_deployment, compile_model, neuron_differences
from neurosim.export.deployment import Deployment, LayerDeployment, deployment_from_manifest, load_deployment
from neurosim.export.nir_graph import deployment_from_nir, from_nir, import_run, read_nir, to_nir, write_nir

__all__ = ["Deployment", "LayerDeployment", "check_deployment", "compile_model", "deployment_from_manifest",
           "deployment_from_nir", "from_nir", "import_run", "load_deployment", "neuron_differences", "read_nir",
           "to_nir", "write_nir"]
