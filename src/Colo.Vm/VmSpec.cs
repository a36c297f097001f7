using System.Text;
using System.Text.RegularExpressions;

namespace Colo.Vm;

/// <summary>
/// Typed description of one QEMU guest, turned into an argv by <see cref="QemuCommandLine.Build"/>.
/// </summary>
/// <remarks>
/// A primary VM and its standby must differ only in <see cref="Name"/>, the paths (<see cref="RamFilePath"/>,
/// <see cref="NetSocketPath"/>, <see cref="QmpSocketPath"/>, <see cref="ConsoleLogPath"/>) and
/// <see cref="IncomingDefer"/>; everything else shapes the device configuration, which migration requires to be
/// identical. Use <c>spec with { ... }</c> to derive the standby's spec from the primary's.
/// Values embedded in QEMU option strings (paths, MAC) must not contain commas; paths must be absolute.
/// </remarks>
public sealed partial record VmSpec
{
    /// <summary>Maximum length in bytes of a unix socket path on Linux (<c>sun_path</c> minus the terminator).</summary>
    public const int MaxUnixSocketPathBytes = 107;

    /// <summary>Human-readable name, used in logs and in temporary socket names. Letters, digits, '-', '_', '.'.</summary>
    public required string Name { get; init; }

    /// <summary>Guest kernel (<c>-kernel</c>). <c>null</c> (default): no kernel; the machine runs its firmware (SeaBIOS).</summary>
    public string? KernelPath { get; init; }

    /// <summary>Initial ramdisk (<c>-initrd</c>); only allowed together with <see cref="KernelPath"/>. Default <c>null</c>.</summary>
    public string? InitrdPath { get; init; }

    /// <summary>Kernel command line (<c>-append</c>); only allowed together with <see cref="KernelPath"/>. Default <c>null</c>.</summary>
    public string? KernelCmdline { get; init; }

    /// <summary>Guest RAM size in MiB (1 MiB = 1048576 bytes). Must be 16..1048576. Default 256.</summary>
    public int MemoryMiB { get; init; } = 256;

    /// <summary>
    /// File backing guest RAM (<c>memory-backend-file,mem-path=</c>, mapped <c>share=on</c>), e.g. <c>/dev/shm/pvm.ram</c>.
    /// The controller maps the same file to read/write guest memory.
    /// </summary>
    public required string RamFilePath { get; init; }

    /// <summary>
    /// Unix socket the project's frame proxy listens on; QEMU connects to it as a client
    /// (<c>-netdev stream,server=off</c>). The socket must be listening before QEMU starts.
    /// </summary>
    public required string NetSocketPath { get; init; }

    /// <summary>Guest NIC MAC address, six colon-separated hex octets, e.g. <c>52:54:00:12:34:56</c>. Must be identical for PVM and SVM.</summary>
    public required string MacAddress { get; init; }

    /// <summary>Unix socket path on which QEMU serves QMP (<c>-qmp unix:PATH,server=on,wait=off</c>).</summary>
    public required string QmpSocketPath { get; init; }

    /// <summary>File receiving the guest's serial console (<c>-serial file:PATH</c>); its directory must exist.</summary>
    public required string ConsoleLogPath { get; init; }

    /// <summary>When true QEMU starts with <c>-incoming defer</c> and waits for <c>migrate-incoming</c>. Default false.</summary>
    public bool IncomingDefer { get; init; }

    /// <summary>Accelerator. Default: <see cref="AcceleratorProbe.Detect"/>.</summary>
    public Accelerator Accelerator { get; init; } = AcceleratorProbe.Detect();

    /// <summary>
    /// CPU model (<c>-cpu</c>). Default <c>qemu64</c>: a fixed, named model so both VMs expose the same CPUID
    /// under TCG and KVM (never use <c>host</c> across machines).
    /// </summary>
    public string CpuModel { get; init; } = "qemu64";

    /// <summary>QEMU executable, looked up on PATH when not absolute. Default <c>qemu-system-x86_64</c>.</summary>
    public string QemuBinary { get; init; } = "qemu-system-x86_64";

    /// <summary>
    /// Guest disk served by an NBD server on this unix socket (export <see cref="DiskExportName"/>), attached as
    /// <c>-blockdev driver=nbd,...</c> + <c>-device virtio-blk-pci</c> (the guest's <c>/dev/vda</c>). Null (default): no
    /// disk unless <see cref="DiskFilePath"/> is set. At most one of the two may be set.
    /// </summary>
    public string? DiskNbdSocketPath { get; init; }

    /// <summary>NBD export name used with <see cref="DiskNbdSocketPath"/>. Default <c>disk</c>.</summary>
    public string DiskExportName { get; init; } = "disk";

    /// <summary>
    /// Guest disk as a local raw image file (<c>-blockdev driver=file</c> + <c>raw</c>), for an unprotected VM (e.g. the
    /// cold boot of a surviving image). Null (default): none.
    /// </summary>
    public string? DiskFilePath { get; init; }

    /// <summary>
    /// When set, the NIC uses QEMU's user-mode network (slirp, <c>restrict=on</c>: the guest reaches nothing outside)
    /// instead of <see cref="NetSocketPath"/>, with this network (e.g. <c>198.18.0.0/24</c>) and the forwards in
    /// <see cref="HostForwards"/>. For unprotected VMs only (checks, tools); never for PVM or SVM.
    /// </summary>
    public string? UserNetwork { get; init; }

    /// <summary>
    /// With <see cref="UserNetwork"/>: TCP forwards <c>127.0.0.1:HostPort</c> → <c>GuestIp:GuestPort</c>. Default empty.
    /// </summary>
    public IReadOnlyList<(int HostPort, string GuestIp, int GuestPort)> HostForwards { get; init; } = [];

    /// <summary>
    /// Extra arguments appended verbatim after the generated ones and before <c>-incoming</c> (e.g. NBD disks).
    /// Default empty. They are part of the device configuration and must match between PVM and SVM.
    /// </summary>
    public IReadOnlyList<string> ExtraArgs { get; init; } = [];

    /// <summary>
    /// Checks every field and throws on the first problem.
    /// </summary>
    /// <exception cref="ArgumentException">A field is missing or malformed; the message names the field.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name) || !NameRegex().IsMatch(Name))
        {
            throw new ArgumentException($"VmSpec.Name '{Name}' must be 1-64 characters of letters, digits, '-', '_' or '.'.", nameof(Name));
        }

        if (KernelPath is null)
        {
            if (InitrdPath is not null)
            {
                throw new ArgumentException("VmSpec.InitrdPath requires KernelPath.", nameof(InitrdPath));
            }

            if (KernelCmdline is not null)
            {
                throw new ArgumentException("VmSpec.KernelCmdline requires KernelPath.", nameof(KernelCmdline));
            }
        }
        else
        {
            CheckPath(KernelPath, nameof(KernelPath), socket: false);
            if (InitrdPath is not null)
            {
                CheckPath(InitrdPath, nameof(InitrdPath), socket: false);
            }
        }

        if (MemoryMiB is < 16 or > 1048576)
        {
            throw new ArgumentException($"VmSpec.MemoryMiB {MemoryMiB} must be between 16 and 1048576.", nameof(MemoryMiB));
        }

        CheckPath(RamFilePath, nameof(RamFilePath), socket: false);
        CheckPath(NetSocketPath, nameof(NetSocketPath), socket: true);
        if (DiskNbdSocketPath is not null)
        {
            CheckPath(DiskNbdSocketPath, nameof(DiskNbdSocketPath), socket: true);
            if (DiskFilePath is not null)
            {
                throw new ArgumentException("VmSpec.DiskNbdSocketPath and DiskFilePath are exclusive.", nameof(DiskFilePath));
            }

            if (string.IsNullOrEmpty(DiskExportName) || DiskExportName.Contains(',', StringComparison.Ordinal))
            {
                throw new ArgumentException($"VmSpec.DiskExportName '{DiskExportName}' must be non-empty without ','.", nameof(DiskExportName));
            }
        }

        if (DiskFilePath is not null)
        {
            CheckPath(DiskFilePath, nameof(DiskFilePath), socket: false);
        }

        if (UserNetwork is not null && !UserNetRegex().IsMatch(UserNetwork))
        {
            throw new ArgumentException($"VmSpec.UserNetwork '{UserNetwork}' must look like 198.18.0.0/24.", nameof(UserNetwork));
        }

        foreach (var (hostPort, guestIp, guestPort) in HostForwards ?? [])
        {
            if (UserNetwork is null || hostPort is < 1 or > 65535 || guestPort is < 1 or > 65535 || !IpRegex().IsMatch(guestIp ?? ""))
            {
                throw new ArgumentException($"VmSpec.HostForwards entry {hostPort}->{guestIp}:{guestPort} is invalid (needs UserNetwork, ports 1-65535, an IPv4 guest address).", nameof(HostForwards));
            }
        }
        CheckPath(QmpSocketPath, nameof(QmpSocketPath), socket: true);
        CheckPath(ConsoleLogPath, nameof(ConsoleLogPath), socket: false);

        if (string.IsNullOrEmpty(MacAddress) || !MacRegex().IsMatch(MacAddress))
        {
            throw new ArgumentException($"VmSpec.MacAddress '{MacAddress}' must look like 52:54:00:12:34:56.", nameof(MacAddress));
        }

        if ((Convert.ToByte(MacAddress[..2], 16) & 1) != 0)
        {
            throw new ArgumentException($"VmSpec.MacAddress '{MacAddress}' is a multicast address.", nameof(MacAddress));
        }

        if (string.IsNullOrWhiteSpace(CpuModel) || CpuModel.Contains(' ', StringComparison.Ordinal))
        {
            throw new ArgumentException($"VmSpec.CpuModel '{CpuModel}' must be a non-empty QEMU CPU model name.", nameof(CpuModel));
        }

        if (string.IsNullOrWhiteSpace(QemuBinary))
        {
            throw new ArgumentException("VmSpec.QemuBinary must not be empty.", nameof(QemuBinary));
        }

        if (!Enum.IsDefined(Accelerator))
        {
            throw new ArgumentException($"VmSpec.Accelerator {Accelerator} is not defined.", nameof(Accelerator));
        }

        if (ExtraArgs is null)
        {
            throw new ArgumentException("VmSpec.ExtraArgs must not be null (use an empty list).", nameof(ExtraArgs));
        }

        for (int i = 0; i < ExtraArgs.Count; i++)
        {
            if (ExtraArgs[i] is null)
            {
                throw new ArgumentException($"VmSpec.ExtraArgs[{i}] is null.", nameof(ExtraArgs));
            }
        }
    }

    private static void CheckPath(string? path, string field, bool socket)
    {
        if (string.IsNullOrEmpty(path))
        {
            throw new ArgumentException($"VmSpec.{field} must not be empty.", field);
        }

        if (!Path.IsPathRooted(path))
        {
            throw new ArgumentException($"VmSpec.{field} '{path}' must be an absolute path.", field);
        }

        if (path.Contains(',', StringComparison.Ordinal))
        {
            throw new ArgumentException($"VmSpec.{field} '{path}' must not contain ',' (QEMU option separator).", field);
        }

        if (path.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"VmSpec.{field} contains a NUL character.", field);
        }

        if (socket && Encoding.UTF8.GetByteCount(path) > MaxUnixSocketPathBytes)
        {
            throw new ArgumentException($"VmSpec.{field} '{path}' is longer than {MaxUnixSocketPathBytes} bytes (unix socket limit).", field);
        }
    }

    [GeneratedRegex(@"^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$")]
    private static partial Regex UserNetRegex();

    [GeneratedRegex(@"^(\d{1,3}\.){3}\d{1,3}$")]
    private static partial Regex IpRegex();

    [GeneratedRegex("^[A-Za-z0-9_.-]{1,64}$")]
    private static partial Regex NameRegex();

    [GeneratedRegex("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    private static partial Regex MacRegex();
}
