"""agentfleet's Pulumi resource provider (the plugin `pulumi-resource-agentfleet`)."""
