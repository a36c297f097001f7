using System.Globalization;

namespace Colo.Vm;

/// <summary>Builds the QEMU argv for a <see cref="VmSpec"/> (layout from DESIGN.md mechanisms 1–4).</summary>
public static class QemuCommandLine
{
    /// <summary>
    /// Returns the argument list (without the executable) for <paramref name="spec"/>:
    /// <c>-accel</c>, q35 machine with RAM in a shared file backend, one vCPU, no default devices, serial console to
    /// a file, optional kernel/initrd/cmdline, a virtio-net NIC on a <c>-netdev stream</c> unix socket client (or user-mode net),
    /// an optional virtio-blk disk (NBD over a unix socket, or a raw file),
    /// QMP on a unix socket, <see cref="VmSpec.ExtraArgs"/>, then <c>-incoming defer</c> when requested.
    /// </summary>
    /// <remarks>Two specs that differ only in paths and <see cref="VmSpec.IncomingDefer"/> yield the same device
    /// configuration, as migration between them requires. Source of option syntax: QEMU 7.2 manual (qemu-system-x86_64 invocation).</remarks>
    /// <exception cref="ArgumentNullException"><paramref name="spec"/> is null.</exception>
    /// <exception cref="ArgumentException">The spec is invalid (see <see cref="VmSpec.Validate"/>).</exception>
    public static IReadOnlyList<string> Build(VmSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();

        string mem = spec.MemoryMiB.ToString(CultureInfo.InvariantCulture) + "M";
        List<string> a = new(48 + spec.ExtraArgs.Count)
        {
            "-accel", spec.Accelerator == Accelerator.Kvm ? "kvm" : "tcg",
            "-machine", "q35,memory-backend=mem",
            "-cpu", spec.CpuModel,
            "-object", $"memory-backend-file,id=mem,size={mem},mem-path={spec.RamFilePath},share=on",
            "-m", mem,
            "-smp", "1",
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-vga", "none",
            "-serial", "file:" + spec.ConsoleLogPath,
        };

        if (spec.KernelPath is not null)
        {
            a.Add("-kernel");
            a.Add(spec.KernelPath);
            if (spec.InitrdPath is not null)
            {
                a.Add("-initrd");
                a.Add(spec.InitrdPath);
            }

            if (spec.KernelCmdline is not null)
            {
                a.Add("-append");
                a.Add(spec.KernelCmdline);
            }
        }

        a.Add("-netdev");
        if (spec.UserNetwork is null)
        {
            a.Add($"stream,id=n0,server=off,addr.type=unix,addr.path={spec.NetSocketPath}");
        }
        else
        {
            var fwd = string.Concat(spec.HostForwards.Select(f => $",hostfwd=tcp:127.0.0.1:{f.HostPort}-{f.GuestIp}:{f.GuestPort}"));
            a.Add($"user,id=n0,restrict=on,net={spec.UserNetwork}{fwd}");
        }
        a.Add("-device");
        // guest_announce=off: after a checkpoint load QEMU would otherwise ask the SVM guest to send gratuitous ARPs
        // that the PVM never sends (SVM-only output, a forced checkpoint each time). The secondary drops QEMU's own
        // RARP self-announce instead.
        a.Add($"virtio-net-pci,netdev=n0,mac={spec.MacAddress.ToLowerInvariant()},romfile=,guest_announce=off");
        if (spec.DiskNbdSocketPath is not null)
        {
            a.Add("-blockdev");
            a.Add($"driver=nbd,node-name=disk0,server.type=unix,server.path={spec.DiskNbdSocketPath},export={spec.DiskExportName}");
        }
        else if (spec.DiskFilePath is not null)
        {
            a.Add("-blockdev");
            a.Add($"driver=raw,node-name=disk0,file.driver=file,file.filename={spec.DiskFilePath}");
        }

        if (spec.DiskNbdSocketPath is not null || spec.DiskFilePath is not null)
        {
            a.Add("-device");
            a.Add("virtio-blk-pci,drive=disk0,romfile=");
        }

        a.Add("-qmp");
        a.Add($"unix:{spec.QmpSocketPath},server=on,wait=off");
        a.AddRange(spec.ExtraArgs);

        if (spec.IncomingDefer)
        {
            a.Add("-incoming");
            a.Add("defer");
        }

        return a.AsReadOnly();
    }
}
