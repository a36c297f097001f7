using System.Text.Json;

namespace Colo.Node;

/// <summary>
/// What a daemon reports about itself in <c>RUN_DIRECTORY/status.json</c> (snake_case JSON,
/// rewritten atomically on every change). Read by <c>colo status</c> and the demo.
/// </summary>
public sealed class NodeStatus
{
    /// <summary>"primary" or "secondary" (a secondary that failed over reports "primary" and <see cref="FailedOver"/>).</summary>
    public string Role { get; set; } = "";

    /// <summary>starting, booting, syncing, protected, unprotected, failed-over, stopped, error.</summary>
    public string State { get; set; } = "starting";

    /// <summary>Last checkpoint epoch acknowledged (0 before the initial sync).</summary>
    public ulong Epoch { get; set; }

    /// <summary>PID of the daemon itself (<c>colo checkpoint</c> signals it).</summary>
    public int DaemonPid { get; set; } = Environment.ProcessId;

    /// <summary>PID of the VM's QEMU that currently runs the guest (PVM on the primary, SVM on the secondary).</summary>
    public int VmPid { get; set; }

    /// <summary>PID of the standby QEMU (secondary only), 0 when none.</summary>
    public int StandbyPid { get; set; }

    /// <summary>Checkpoints completed after the initial sync.</summary>
    public int Checkpoints { get; set; }

    /// <summary>Checkpoints by trigger: mismatch, timeout, queue_full, operator, periodic.</summary>
    public Dictionary<string, int> CheckpointsByReason { get; set; } = new();

    /// <summary>PVM pause of each checkpoint in ms (primary), most recent last, at most 10000 kept.</summary>
    public List<double> PauseMs { get; set; } = new();

    /// <summary>Initial sync duration in ms.</summary>
    public double InitialSyncMs { get; set; }

    /// <summary>Pages shipped in checkpoints, in total.</summary>
    public long PagesShipped { get; set; }

    /// <summary>Unix time in ms at which the peer was declared lost, 0 if never.</summary>
    public long PeerLostAtUnixMs { get; set; }

    /// <summary>Why the peer was declared lost.</summary>
    public string? PeerLostReason { get; set; }

    /// <summary>True once a secondary has taken over as primary.</summary>
    public bool FailedOver { get; set; }

    /// <summary>Unix time in ms at which the failed-over SVM started serving clients.</summary>
    public long FailoverDoneAtUnixMs { get; set; }

    /// <summary>Proxy counters (compare engine on the primary, rewriter on the secondary).</summary>
    public Dictionary<string, long> Counters { get; set; } = new();

    /// <summary>Disk replication figures; null when the VM has no disk.</summary>
    public DiskStatus? Disk { get; set; }

    /// <summary>Last error, if the daemon stopped because of one.</summary>
    public string? Error { get; set; }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>Reads a status file; null when it does not exist or cannot be parsed yet.</summary>
    public static NodeStatus? TryRead(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<NodeStatus>(File.ReadAllText(path), Json);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Writes the status atomically (temp file + rename).</summary>
    public void Write(string path)
    {
        string tmp = path + ".tmp";
        lock (this)
        {
            File.WriteAllText(tmp, JsonSerializer.Serialize(this, Json));
            File.Move(tmp, path, overwrite: true);
        }
    }
}
