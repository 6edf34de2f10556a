/*
 * vm: a migrated host's VM in Azure, from the fixed VHD page blobs convert wrote.
 *
 * In the migration's resource group (net.h), named from the host:
 *   "<host>-disk0" (boot) and "<host>-disk<i>" (data disk i, 1-based): managed disks
 *     imported from the blob URLs (creationData createOption Import, sourceUri, the
 *     storage account's id), the boot disk with osType Linux and hyperVGeneration V1 for
 *     legacy BIOS, V2 for UEFI, and the Arm64 architecture for arm64 sources;
 *   "<host>-pip": a Standard, static public IP, only when asked for;
 *   "<host>-nic": in the blueprint's subnet, with the NSG and the public IP;
 *   "<host>": the VM of the chosen size with the boot disk attached (createOption
 *     Attach), the data disks attached at LUN 0.., boot diagnostics on, and no osProfile
 *     at all: the migrated OS keeps its own accounts, nothing is injected.
 * Each is looked up first and only put when missing; the PUTs wait for their
 * operations, so on return the VM's provisioningState is Succeeded. Blocks.
 */
#ifndef XM_AZURE_VM_H
#define XM_AZURE_VM_H

#include "azure/arm.h"
#include "err.h"
#include "provider.h"

int azure_vm_launch(struct arm *a, const char *location, const char *storage_account_id,
                    const struct vm_launch_spec *spec, struct vm_launch_result *out,
                    struct err *err);

#endif
