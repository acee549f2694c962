"""Export (DESIGN.md §4): compile a trained model to a chip profile's integer formats, check it
against the chip's limits, and save or load the deployment artifact."""

from neurosim.export.compile import check_deployment, compile_model, neuron_differences
from neurosim.export.deployment import Deployment, LayerDeployment, deployment_from_manifest, load_deployment

__all__ = ["Deployment", "LayerDeployment", "check_deployment", "compile_model", "deployment_from_manifest",
           "load_deployment", "neuron_differences"]
