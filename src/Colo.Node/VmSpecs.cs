using System.Security.Cryptography;
using System.Text;
using Colo.Vm;

namespace Colo.Node;

/// <summary>Builds the VM description both daemons use, so PVM, SVM and standby get identical devices.</summary>
internal static class VmSpecs
{
    /// <summary>The spec of one QEMU instance; <paramref name="tag"/> names its sockets and console (pvm, svm1, svm2, ...).</summary>
    public static VmSpec For(NodeConfig cfg, string tag, string ramPath, bool incoming) => new()
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
    };

    /// <summary>Hash of what must be equal on both hosts (kernel, initrd, cmdline, memory, MAC).</summary>
    public static string ConfigHash(NodeConfig cfg)
    {
        string s = string.Join('\n', cfg.VmName, cfg.KernelCmdline, cfg.MemoryMiB, cfg.GuestMac,
            new FileInfo(cfg.KernelPath).Length, new FileInfo(cfg.InitrdPath).Length);
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..16];
    }
}
