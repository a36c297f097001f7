using System.Security.Cryptography;
using System.Text;
using Colo.Vm;

namespace Colo.Node;

/// <summary>Builds the VM description both daemons use, so PVM, SVM and standby get identical devices.</summary>
internal static class VmSpecs
{
    /// <summary>The spec of one QEMU instance; <paramref name="tag"/> names its sockets and console (pvm, svm1, svm2, ...).</summary>
    /// <param name="cfg">The daemon's config.</param>
    /// <param name="tag">Names the instance's sockets and console.</param>
    /// <param name="ramPath">Guest RAM file.</param>
    /// <param name="incoming">Start in <c>-incoming defer</c>.</param>
    /// <param name="diskSocket">NBD socket serving the guest disk (export <c>disk</c>); null when the VM has no disk.</param>
    public static VmSpec For(NodeConfig cfg, string tag, string ramPath, bool incoming, string? diskSocket) => new()
    {
        Name = $"{cfg.VmName}-{tag}",
        KernelPath = cfg.KernelPath,
        InitrdPath = cfg.InitrdPath,
        KernelCmdline = cfg.KernelCmdline,
        MemoryMiB = cfg.MemoryMiB,
        RamFilePath = ramPath,
        NetSocketPath = Path.Combine(cfg.RunDirectory, $"{tag}-net.sock"),
        MacAddress = cfg.GuestMac,
        QmpSocketPath = Path.Combine(cfg.RunDirectory, $"{tag}-qmp.sock"),
        ConsoleLogPath = Path.Combine(cfg.RunDirectory, $"{tag}-console.log"),
        IncomingDefer = incoming,
        DiskNbdSocketPath = diskSocket,
    };

    /// <summary>The NBD socket the daemon serves the guest disk on (one per daemon; every SVM generation connects to it); null without a disk.</summary>
    public static string? DiskSocket(NodeConfig cfg, string role) =>
        cfg.DiskImage is null ? null : Path.Combine(cfg.RunDirectory, role + "-disk.sock");

    /// <summary>Hash of what must be equal on both hosts (kernel, initrd, cmdline, memory, MAC, having a disk).</summary>
    public static string ConfigHash(NodeConfig cfg)
    {
        string s = string.Join('\n', cfg.VmName, cfg.KernelCmdline, cfg.MemoryMiB, cfg.GuestMac,
            new FileInfo(cfg.KernelPath).Length, new FileInfo(cfg.InitrdPath).Length, cfg.DiskImage is null ? "no-disk" : "disk");
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..16];
    }
}
