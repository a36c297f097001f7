using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Colo.Node;

/// <summary>
/// Configuration of one COLO daemon (primary or secondary), read from a JSON file
/// (snake_case keys). Both daemons of a pair must describe the same VM (name, memory, MAC).
/// </summary>
public sealed record NodeConfig
{
    /// <summary>VM name; used in file names (letters, digits, '-', '_').</summary>
    public required string VmName { get; init; }

    /// <summary>Directory for sockets, console log and status.json of this daemon.</summary>
    public required string RunDirectory { get; init; }

    /// <summary>Guest kernel (bzImage).</summary>
    public required string KernelPath { get; init; }

    /// <summary>Guest initramfs.</summary>
    public required string InitrdPath { get; init; }

    /// <summary>Guest kernel command line.</summary>
    public required string KernelCmdline { get; init; }

    /// <summary>Guest RAM in MiB (default 256).</summary>
    [JsonPropertyName("memory_mib")]
    public int MemoryMiB { get; init; } = 256;

    /// <summary>Guest NIC MAC address, e.g. 52:54:00:c0:10:01.</summary>
    public required string GuestMac { get; init; }

    /// <summary>Guest IPv4 address (without prefix); used for the gratuitous ARP at failover.</summary>
    public required string GuestIp { get; init; }

    /// <summary>Existing TAP interface on this host that faces the clients (default tap0).</summary>
    public string TapName { get; init; } = "tap0";

    /// <summary>Replication link: the secondary listens on this address, the primary connects to it.</summary>
    public required string LinkAddress { get; init; }

    /// <summary>Replication link TCP port (default 7070).</summary>
    public int LinkPort { get; init; } = 7070;

    /// <summary>Compare timeout in ms: PVM output not matched within it forces a checkpoint (default 1000).</summary>
    public int CompareTimeoutMs { get; init; } = 1000;

    /// <summary>Maximum epoch length in ms before a periodic checkpoint (default 10000; 0 = none).</summary>
    public int MaxEpochMs { get; init; } = 10000;

    /// <summary>Heartbeat interval in ms (default 100).</summary>
    public int HeartbeatIntervalMs { get; init; } = 100;

    /// <summary>Peer declared lost after this many ms without any message (default 500).</summary>
    public int HeartbeatTimeoutMs { get; init; } = 500;

    /// <summary>
    /// Heartbeat timeout in ms until the initial sync is complete (default 5000). Before protection starts a false peer
    /// loss (a daemon starved while QEMUs start and the disk and memory are copied) would cost the protection, while a
    /// real one costs nothing (there is nothing to fail over to yet), so the tolerance is larger. Link closure and goodbye
    /// are still detected at once.
    /// </summary>
    public int SyncHeartbeatTimeoutMs { get; init; } = 5000;

    /// <summary>Time the primary waits for the secondary's "loaded" acknowledgement, ms (default 20000).</summary>
    public int CheckpointTimeoutMs { get; init; } = 20000;

    /// <summary>Time to wait for the peer to connect or accept on the link, ms (default 300000).</summary>
    public int LinkWaitMs { get; init; } = 300_000;

    /// <summary>Console line the guest prints when its services are up (default COLO-GUEST-READY).</summary>
    public string ReadyMarker { get; init; } = "COLO-GUEST-READY";

    /// <summary>Time the primary waits for <see cref="ReadyMarker"/>, ms (default 300000).</summary>
    public int GuestReadyTimeoutMs { get; init; } = 300_000;

    /// <summary>Directory for guest RAM files (default /dev/shm).</summary>
    public string RamDirectory { get; init; } = "/dev/shm";

    /// <summary>Prefix of every file this daemon creates in <see cref="RamDirectory"/>.</summary>
    public string RamFilePrefix { get; init; } = "colo";

    /// <summary>
    /// Guest disk (raw image), optional. Primary: the PVM's disk, must exist; it is served to the PVM by this daemon's
    /// NBD server and every write is forwarded to the secondary. Secondary: the replica's base image; created or
    /// overwritten (to the primary's size) by the initial sync. Both daemons must agree on having a disk or not.
    /// Null: the VM has no disk.
    /// </summary>
    public string? DiskImage { get; init; }

    /// <summary>Secondary: memory for the PVM write buffer before it spills to a file, MiB (default 64).</summary>
    public int DiskBufferMemoryMib { get; init; } = 64;

    /// <summary>Secondary: memory for the SVM write overlay before it spills to a file, MiB (default 64).</summary>
    public int DiskOverlayMemoryMib { get; init; } = 64;

    /// <summary>Primary: bytes of forwarded writes queued for the link before guest writes wait, MiB (default 64).</summary>
    public int DiskForwardQueueMib { get; init; } = 64;

    /// <summary>Guest RAM size in bytes.</summary>
    [JsonIgnore]
    public long MemoryBytes => (long)MemoryMiB * 1024 * 1024;

    /// <summary>Link endpoint.</summary>
    [JsonIgnore]
    public IPEndPoint LinkEndPoint => new(IPAddress.Parse(LinkAddress), LinkPort);

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Reads and validates a config file.</summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON or a value is out of range (message names the key).</exception>
    public static NodeConfig Load(string path)
    {
        NodeConfig? cfg;
        try
        {
            cfg = JsonSerializer.Deserialize<NodeConfig>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"config: {e.Message} (in {path})", e);
        }
        if (cfg is null)
            throw new InvalidDataException($"config: {path} is empty");
        cfg.Validate();
        return cfg;
    }

    /// <summary>Writes the config as JSON.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    /// <summary>Checks every value.</summary>
    /// <exception cref="InvalidDataException">A value is invalid; the message names it.</exception>
    public void Validate()
    {
        static void Check(bool ok, string message)
        {
            if (!ok)
                throw new InvalidDataException("config: " + message);
        }
        foreach (var (key, value) in new[]
        {
            ("vm_name", VmName), ("run_directory", RunDirectory), ("kernel_path", KernelPath), ("initrd_path", InitrdPath),
            ("kernel_cmdline", KernelCmdline), ("guest_mac", GuestMac), ("guest_ip", GuestIp), ("link_address", LinkAddress),
            ("tap_name", TapName), ("ram_directory", RamDirectory), ("ram_file_prefix", RamFilePrefix), ("ready_marker", ReadyMarker),
        })
        {
            Check(!string.IsNullOrWhiteSpace(value), key + " must be set");
        }
        Check(!string.IsNullOrWhiteSpace(VmName) && VmName.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'), "vm_name must be letters, digits, '-' or '_'");
        Check(MemoryMiB is >= 16 and <= 65536, "memory_mib must be 16..65536");
        Check(File.Exists(KernelPath), $"kernel_path {KernelPath} does not exist");
        Check(File.Exists(InitrdPath), $"initrd_path {InitrdPath} does not exist");
        Check(System.Text.RegularExpressions.Regex.IsMatch(GuestMac, "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
            && System.Net.NetworkInformation.PhysicalAddress.TryParse(GuestMac.Replace(':', '-'), out var mac)
            && (mac.GetAddressBytes()[0] & 1) == 0 && mac.GetAddressBytes().Any(b => b != 0),
            "guest_mac must be a unicast, non-zero MAC address like 52:54:00:12:34:56");
        Check(IPAddress.TryParse(GuestIp, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork, "guest_ip must be an IPv4 address");
        Check(IPAddress.TryParse(LinkAddress, out _), "link_address must be an IP address");
        Check(LinkPort is > 0 and < 65536, "link_port must be 1..65535");
        Check(CompareTimeoutMs is >= 10 and <= 600_000, "compare_timeout_ms must be 10..600000");
        Check(MaxEpochMs >= 0, "max_epoch_ms must be >= 0");
        Check(HeartbeatIntervalMs > 0 && HeartbeatTimeoutMs > HeartbeatIntervalMs, "heartbeat_timeout_ms must exceed heartbeat_interval_ms > 0");
        Check(SyncHeartbeatTimeoutMs >= HeartbeatTimeoutMs, "sync_heartbeat_timeout_ms must be at least heartbeat_timeout_ms");
        Check(CheckpointTimeoutMs > 0 && LinkWaitMs > 0 && GuestReadyTimeoutMs > 0, "timeouts must be positive");
        Check(TapName.Length is > 0 and <= 15, "tap_name must be 1..15 characters");
        Check(DiskImage is null || (DiskImage.Length > 0 && Path.IsPathRooted(DiskImage) && !DiskImage.Contains(',')), "disk_image must be an absolute path without ','");
        Check(DiskImage is null || Directory.Exists(Path.GetDirectoryName(DiskImage)), $"disk_image {DiskImage}: its directory does not exist");
        Check(DiskBufferMemoryMib is >= 0 and <= 65536, "disk_buffer_memory_mib must be 0..65536");
        Check(DiskOverlayMemoryMib is >= 0 and <= 65536, "disk_overlay_memory_mib must be 0..65536");
        Check(DiskForwardQueueMib is >= 8 and <= 65536, "disk_forward_queue_mib must be 8..65536");
    }
}
