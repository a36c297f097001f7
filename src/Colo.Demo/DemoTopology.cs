using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Demo;

/// <summary>
/// The demo's three "hosts" as network namespaces built with iproute2:
/// <list type="bullet">
/// <item><c>colo-TAG-lan</c>: client LAN. Bridge <c>br0</c> (client address 198.18.0.100/24) with ports
/// <c>p-pri</c> and <c>p-sec</c>; the client workload runs here.</item>
/// <item><c>colo-TAG-pri</c> / <c>colo-TAG-sec</c>: primary / secondary host. Each has <c>lan0</c>
/// (veth peer of <c>p-pri</c> / <c>p-sec</c>), a TAP <c>tap0</c> and a bridge <c>br0</c> joining
/// <c>tap0</c> + <c>lan0</c>; and <c>rep0</c>, the replication veth (198.19.0.1/30 on the primary,
/// 198.19.0.2/30 on the secondary), isolated from the LAN.</item>
/// </list>
/// IPv6 is disabled in all three namespaces; bridges have STP off, forward delay 0 and the default
/// 300 s FDB ageing time. After a failover the LAN bridge learns the guest MAC on <c>p-sec</c> from the
/// first frame the new primary sends (e.g. QEMU's self-announce or a gratuitous ARP).
/// Disposing deletes the namespaces (and with them every interface inside). Requires root.
/// </summary>
public sealed partial class DemoTopology : IAsyncDisposable, IDisposable
{
    /// <summary>Prefix of every namespace this class creates.</summary>
    public const string NamespacePrefix = "colo-";

    /// <summary>Name of the bridge in each namespace.</summary>
    public const string BridgeName = "br0";

    /// <summary>Name of the TAP device in the primary and secondary namespaces.</summary>
    public const string TapName = "tap0";

    /// <summary>Name of the LAN-facing veth in the primary and secondary namespaces.</summary>
    public const string LanUplinkName = "lan0";

    /// <summary>Name of the replication veth in the primary and secondary namespaces.</summary>
    public const string ReplicationInterfaceName = "rep0";

    /// <summary>Name, in the LAN namespace, of the veth leading to the primary.</summary>
    public const string LanPortToPrimary = "p-pri";

    /// <summary>Name, in the LAN namespace, of the veth leading to the secondary.</summary>
    public const string LanPortToSecondary = "p-sec";

    /// <summary>Default timeout of each <c>ip</c> command.</summary>
    public static readonly TimeSpan DefaultCommandTimeout = TimeSpan.FromSeconds(10);

    private static readonly string LockDirectory = Directory.Exists("/run") ? "/run/colo-demo" : Path.Combine(Path.GetTempPath(), "colo-demo");

    private readonly ILogger _logger;
    private readonly TimeSpan _commandTimeout;
    private FileStream? _lock;
    private string? _lockPath;
    private int _disposed;

    private DemoTopology(string tag, ILogger logger, TimeSpan commandTimeout)
    {
        Tag = tag;
        _logger = logger;
        _commandTimeout = commandTimeout;
        PrimaryNamespace = $"{NamespacePrefix}{tag}-pri";
        SecondaryNamespace = $"{NamespacePrefix}{tag}-sec";
        LanNamespace = $"{NamespacePrefix}{tag}-lan";
    }

    /// <summary>The run's unique tag: 4 lowercase hex characters.</summary>
    public string Tag { get; }

    /// <summary>Namespace of the primary host (<c>colo-TAG-pri</c>).</summary>
    public string PrimaryNamespace { get; }

    /// <summary>Namespace of the secondary host (<c>colo-TAG-sec</c>).</summary>
    public string SecondaryNamespace { get; }

    /// <summary>Namespace of the client LAN (<c>colo-TAG-lan</c>); the client workload runs here.</summary>
    public string LanNamespace { get; }

    /// <summary>All three namespace names (primary, secondary, LAN).</summary>
    public IReadOnlyList<string> Namespaces => [PrimaryNamespace, SecondaryNamespace, LanNamespace];

    /// <summary>The client's address on the LAN bridge (198.18.0.100).</summary>
    public IPAddress ClientIp { get; } = IPAddress.Parse("198.18.0.100");

    /// <summary>The guest's address (198.18.0.10); configured inside the guest, not by this class.</summary>
    public IPAddress GuestIp { get; } = IPAddress.Parse("198.18.0.10");

    /// <summary>Prefix length of the LAN subnet (24) for both client and guest addresses.</summary>
    public int LanPrefixLength => 24;

    /// <summary>The guest NIC's fixed MAC address (<c>52:54:00:c0:10:01</c>).</summary>
    public string GuestMac => "52:54:00:c0:10:01";

    /// <summary>Primary end of the replication link (198.19.0.1, on <c>rep0</c> in the primary namespace).</summary>
    public IPAddress PrimaryReplicationIp { get; } = IPAddress.Parse("198.19.0.1");

    /// <summary>Secondary end of the replication link (198.19.0.2, on <c>rep0</c> in the secondary namespace).</summary>
    public IPAddress SecondaryReplicationIp { get; } = IPAddress.Parse("198.19.0.2");

    /// <summary>Prefix length of the replication subnet (30).</summary>
    public int ReplicationPrefixLength => 30;

    /// <summary>
    /// Creates a topology with a fresh unique tag. On any failure the namespaces already made are removed again.
    /// </summary>
    /// <param name="logger">Receives progress and cleanup messages; null for none.</param>
    /// <param name="commandTimeout">Timeout of each <c>ip</c>/<c>sysctl</c> command; default <see cref="DefaultCommandTimeout"/>.</param>
    /// <param name="cancellationToken">Cancels the build (the partial topology is removed).</param>
    /// <returns>The ready topology; dispose it to remove the namespaces.</returns>
    /// <exception cref="InvalidOperationException">A command failed, timed out or could not be started; the message holds the command line and its stderr.</exception>
    /// <exception cref="UnauthorizedAccessException">The lock directory (<c>/run/colo-demo</c>) is not writable (not root).</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static async Task<DemoTopology> CreateAsync(ILogger? logger = null, TimeSpan? commandTimeout = null, CancellationToken cancellationToken = default)
    {
        logger ??= NullLogger.Instance;
        TimeSpan timeout = commandTimeout ?? DefaultCommandTimeout;
        var existing = await ListNamespacesAsync(timeout, cancellationToken).ConfigureAwait(false);

        DemoTopology? topology = null;
        for (int attempt = 0; attempt < 64 && topology is null; attempt++)
        {
            string tag = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2));
            if (existing.Any(n => TryParseTag(n, out string t) && t == tag))
                continue;
            var candidate = new DemoTopology(tag, logger, timeout);
            if (candidate.TryAcquireLock())
                topology = candidate;
        }
        if (topology is null)
            throw new InvalidOperationException("could not find a free demo topology tag");

        try
        {
            await topology.BuildAsync(cancellationToken).ConfigureAwait(false);
            logger.LogInformation("demo topology {Tag} ready: {Pri}, {Sec}, {Lan}", topology.Tag, topology.PrimaryNamespace, topology.SecondaryNamespace, topology.LanNamespace);
            return topology;
        }
        catch
        {
            await topology.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Builds <c>ip netns exec NS FILE ARGS...</c> (no shell; arguments passed verbatim via ArgumentList).
    /// Output is not redirected; use <see cref="DemoProcess.RunAsync"/> to run it with a timeout and capture output.
    /// </summary>
    /// <param name="ns">Namespace name.</param>
    /// <param name="file">Executable to run inside the namespace.</param>
    /// <param name="args">Its arguments.</param>
    /// <returns>A start info for <c>ip</c>.</returns>
    /// <exception cref="ArgumentException"><paramref name="ns"/> or <paramref name="file"/> is empty.</exception>
    public static ProcessStartInfo ExecIn(string ns, string file, params string[] args)
    {
        ArgumentException.ThrowIfNullOrEmpty(ns);
        ArgumentException.ThrowIfNullOrEmpty(file);
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false };
        psi.ArgumentList.Add("netns");
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(ns);
        psi.ArgumentList.Add(file);
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>
    /// Removes leftover <c>colo-TAG-{pri,sec,lan}</c> namespaces of earlier crashed runs: those whose tag is not
    /// held by a live topology (a live one holds an exclusive lock on <c>/run/colo-demo/TAG.lock</c>).
    /// Other namespaces are never touched. Never throws; failures are logged.
    /// </summary>
    /// <param name="logger">Receives what was removed and any failure; null for none.</param>
    /// <returns>Number of namespaces deleted.</returns>
    public static int CleanupStale(ILogger? logger = null) => CleanupStale(logger, static _ => true);

    /// <summary>As <see cref="CleanupStale(ILogger?)"/>, restricted to tags accepted by <paramref name="tagFilter"/> (tests).</summary>
    internal static int CleanupStale(ILogger? logger, Func<string, bool> tagFilter)
    {
        logger ??= NullLogger.Instance;
        int removed = 0;
        try
        {
            var names = ListNamespacesAsync(DefaultCommandTimeout, CancellationToken.None).GetAwaiter().GetResult();
            foreach (var group in names.Select(n => (Name: n, Ok: TryParseTag(n, out string t), Tag: t)).Where(x => x.Ok && tagFilter(x.Tag)).GroupBy(x => x.Tag))
            {
                var probe = new DemoTopology(group.Key, logger, DefaultCommandTimeout);
                if (!probe.TryAcquireLock())
                {
                    logger.LogDebug("demo topology {Tag} is in use; not removing it", group.Key);
                    continue;
                }
                try
                {
                    foreach (var ns in group)
                    {
                        if (probe.DeleteNamespace(ns.Name))
                        {
                            removed++;
                            logger.LogInformation("removed stale namespace {Namespace}", ns.Name);
                        }
                    }
                }
                finally
                {
                    probe.ReleaseLock();
                }
            }
        }
        catch (Exception ex)
        {
            logger.LogWarning(ex, "cleanup of stale demo namespaces failed");
        }
        return removed;
    }

    /// <summary>Deletes the namespaces. Idempotent; never throws (failures are logged).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        foreach (string ns in Namespaces)
            DeleteNamespace(ns);
        ReleaseLock();
    }

    /// <summary>Deletes the namespaces. Idempotent; never throws (failures are logged).</summary>
    /// <returns>A task completing when the namespaces are gone.</returns>
    public ValueTask DisposeAsync()
    {
        // Deletion is three quick `ip netns delete` calls; run them off the caller's thread.
        return new ValueTask(Task.Run(Dispose));
    }

    /// <summary>Runs <c>ip ARGS...</c> with the command timeout.</summary>
    /// <param name="args">Arguments of <c>ip</c>.</param>
    /// <param name="cancellationToken">Cancels (kills) the command.</param>
    /// <returns>Standard output.</returns>
    /// <exception cref="InvalidOperationException">Non-zero exit, timeout or start failure; the message holds the command and its stderr.</exception>
    public Task<string> IpAsync(IEnumerable<string> args, CancellationToken cancellationToken = default)
    {
        var psi = new ProcessStartInfo("ip");
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        return RunCheckedAsync(psi, _commandTimeout, cancellationToken);
    }

    private async Task BuildAsync(CancellationToken ct)
    {
        string pri = PrimaryNamespace, sec = SecondaryNamespace, lan = LanNamespace;
        foreach (string ns in Namespaces)
        {
            await Ip(ct, "netns", "add", ns).ConfigureAwait(false);
            // IPv6 off before any interface exists, so none gets link-local addresses or sends ND/MLD.
            await RunCheckedAsync(ExecIn(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"), _commandTimeout, ct).ConfigureAwait(false);
            await RunCheckedAsync(ExecIn(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"), _commandTimeout, ct).ConfigureAwait(false);
            await Ip(ct, "-n", ns, "link", "set", "lo", "up").ConfigureAwait(false);
        }

        // Client LAN bridge.
        await AddBridge(lan, ct).ConfigureAwait(false);
        await Ip(ct, "-n", lan, "addr", "add", $"{ClientIp}/{LanPrefixLength}", "dev", BridgeName).ConfigureAwait(false);

        // Host uplinks: lan0 (in host ns) <-> p-pri / p-sec (in lan ns, on br0).
        foreach (var (hostNs, port) in new[] { (pri, LanPortToPrimary), (sec, LanPortToSecondary) })
        {
            await Ip(ct, "-n", hostNs, "link", "add", LanUplinkName, "type", "veth", "peer", "name", port, "netns", lan).ConfigureAwait(false);
            await Ip(ct, "-n", lan, "link", "set", port, "master", BridgeName).ConfigureAwait(false);
            await Ip(ct, "-n", lan, "link", "set", port, "up").ConfigureAwait(false);

            await AddBridge(hostNs, ct).ConfigureAwait(false);
            await Ip(ct, "-n", hostNs, "tuntap", "add", "dev", TapName, "mode", "tap").ConfigureAwait(false);
            await Ip(ct, "-n", hostNs, "link", "set", TapName, "master", BridgeName).ConfigureAwait(false);
            await Ip(ct, "-n", hostNs, "link", "set", LanUplinkName, "master", BridgeName).ConfigureAwait(false);
            await Ip(ct, "-n", hostNs, "link", "set", TapName, "up").ConfigureAwait(false);
            await Ip(ct, "-n", hostNs, "link", "set", LanUplinkName, "up").ConfigureAwait(false);
        }

        // Replication link.
        await Ip(ct, "-n", pri, "link", "add", ReplicationInterfaceName, "type", "veth", "peer", "name", ReplicationInterfaceName, "netns", sec).ConfigureAwait(false);
        await Ip(ct, "-n", pri, "addr", "add", $"{PrimaryReplicationIp}/{ReplicationPrefixLength}", "dev", ReplicationInterfaceName).ConfigureAwait(false);
        await Ip(ct, "-n", sec, "addr", "add", $"{SecondaryReplicationIp}/{ReplicationPrefixLength}", "dev", ReplicationInterfaceName).ConfigureAwait(false);
        await Ip(ct, "-n", pri, "link", "set", ReplicationInterfaceName, "up").ConfigureAwait(false);
        await Ip(ct, "-n", sec, "link", "set", ReplicationInterfaceName, "up").ConfigureAwait(false);
    }

    private async Task AddBridge(string ns, CancellationToken ct)
    {
        // STP off, forward delay 0: ports forward immediately; ageing 30000 cs = 300 s (kernel default).
        await Ip(ct, "-n", ns, "link", "add", BridgeName, "type", "bridge", "stp_state", "0", "forward_delay", "0", "ageing_time", "30000").ConfigureAwait(false);
        await Ip(ct, "-n", ns, "link", "set", BridgeName, "type", "bridge", "forward_delay", "0").ConfigureAwait(false);
        await Ip(ct, "-n", ns, "link", "set", BridgeName, "up").ConfigureAwait(false);
    }

    private Task<string> Ip(CancellationToken ct, params string[] args) => IpAsync(args, ct);

    private static async Task<string> RunCheckedAsync(ProcessStartInfo psi, TimeSpan timeout, CancellationToken ct)
    {
        ProcessResult r = await DemoProcess.RunAsync(psi, timeout, ct).ConfigureAwait(false);
        if (r.TimedOut)
            throw new InvalidOperationException($"`{DemoProcess.Describe(psi)}` timed out after {timeout.TotalSeconds:0.#} s: {r.StdErr.Trim()}");
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"`{DemoProcess.Describe(psi)}` failed with exit code {r.ExitCode}: {r.StdErr.Trim()}");
        return r.StdOut;
    }

    private static async Task<IReadOnlyList<string>> ListNamespacesAsync(TimeSpan timeout, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("ip");
        psi.ArgumentList.Add("netns");
        psi.ArgumentList.Add("list");
        string output = await RunCheckedAsync(psi, timeout, ct).ConfigureAwait(false);
        // Lines look like "colo-1a2b-pri (id: 3)" or just "colo-1a2b-pri".
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split(' ', 2)[0])
            .ToList();
    }

    /// <summary>Parses a namespace name made by this class (<c>colo-XXXX-pri|sec|lan</c>, XXXX lowercase hex).</summary>
    internal static bool TryParseTag(string ns, out string tag)
    {
        Match m = NamespaceRegex().Match(ns);
        tag = m.Success ? m.Groups[1].Value : string.Empty;
        return m.Success;
    }

    [GeneratedRegex("^colo-([0-9a-f]{4})-(pri|sec|lan)$")]
    private static partial Regex NamespaceRegex();

    private bool DeleteNamespace(string ns)
    {
        try
        {
            var psi = new ProcessStartInfo("ip");
            psi.ArgumentList.Add("netns");
            psi.ArgumentList.Add("delete");
            psi.ArgumentList.Add(ns);
            ProcessResult r = DemoProcess.RunAsync(psi, _commandTimeout).GetAwaiter().GetResult();
            if (r.ExitCode == 0)
                return true;
            if (!File.Exists(Path.Combine("/run/netns", ns)))
                return false; // Already gone: idempotent.
            _logger.LogWarning("`ip netns delete {Namespace}` failed (exit {Exit}, timed out {TimedOut}): {Err}", ns, r.ExitCode, r.TimedOut, r.StdErr.Trim());
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "deleting namespace {Namespace} failed", ns);
        }
        return false;
    }

    /// <summary>
    /// True when a live demo holds the lock of <paramref name="tag"/> (4 hex digits). Used to sweep what a crashed
    /// run left behind (RAM files, orphaned processes) without touching a run in progress.
    /// </summary>
    public static bool IsTagInUse(string tag)
    {
        var probe = new DemoTopology(tag, NullLogger.Instance, DefaultCommandTimeout);
        if (!probe.TryAcquireLock())
            return true;
        probe.ReleaseLock();
        return false;
    }

    private bool TryAcquireLock()
    {
        try
        {
            Directory.CreateDirectory(LockDirectory);
            string path = Path.Combine(LockDirectory, Tag + ".lock");
            // FileShare.None takes an exclusive flock() on Unix: held until the stream is closed or the process dies.
            _lock = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            _lockPath = path;
            return true;
        }
        catch (IOException)
        {
            // Held by a live topology (or unusable): treat the tag as taken.
            _lock = null;
            return false;
        }
    }

    private void ReleaseLock()
    {
        try
        {
            if (_lock is not null && _lockPath is not null)
                File.Delete(_lockPath);
        }
        catch (Exception ex)
        {
            _logger.LogDebug(ex, "could not delete lock file {Path}", _lockPath);
        }
        _lock?.Dispose();
        _lock = null;
    }
}
