using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>
/// Report section <c>disk</c>. The disk scenario fills every field; the service scenario only the replication figures
/// (<c>overlay_bytes_max</c>, <c>buffer_bytes_max</c>, <c>sync_ms</c>, <c>sync_bytes</c>). Fields not measured are null
/// and omitted from the JSON.
/// </summary>
public sealed class DemoDiskSummary
{
    /// <summary>Writes (<c>SET k&lt;i&gt; v&lt;i&gt;</c>) acknowledged with <c>+OK</c>.</summary>
    [JsonPropertyName("acked_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? AckedWrites { get; set; }

    /// <summary>Acknowledged writes missing or wrong when read back after the failover.</summary>
    [JsonPropertyName("lost_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? LostWrites { get; set; }

    /// <summary>The surviving disk image's file system is clean (journal replay, then <c>e2fsck -fn</c>).</summary>
    [JsonPropertyName("fsck_clean")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? FsckClean { get; set; }

    /// <summary>The surviving image, booted cold in a fresh unprotected VM, served every acknowledged key with its value.</summary>
    [JsonPropertyName("cold_boot_keys_ok")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? ColdBootKeysOk { get; set; }

    /// <summary>Largest SVM write overlay on the secondary, bytes.</summary>
    [JsonPropertyName("overlay_bytes_max")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? OverlayBytesMax { get; set; }

    /// <summary>Largest buffer of PVM writes on the secondary (awaiting the next checkpoint), bytes.</summary>
    [JsonPropertyName("buffer_bytes_max")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? BufferBytesMax { get; set; }

    /// <summary>Writes sent without a reply (timeout or broken connection): neither acknowledged nor lost.</summary>
    [JsonPropertyName("unknown_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? UnknownWrites { get; set; }

    /// <summary>Writes answered with an error reply (not applied).</summary>
    [JsonPropertyName("rejected_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? RejectedWrites { get; set; }

    /// <summary>Acknowledged keys read back after the failover (equals acked_writes when the read-back completed).</summary>
    [JsonPropertyName("verified_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? VerifiedWrites { get; set; }

    /// <summary>Connections the client had to open again (0 when the one connection survived the failover).</summary>
    [JsonPropertyName("reconnects")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Reconnects { get; set; }

    /// <summary>The journal had to be replayed before the check (expected: the SVM died like a power cut).</summary>
    [JsonPropertyName("fsck_journal_replayed")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? FsckJournalReplayed { get; set; }

    /// <summary>Acknowledged keys missing or wrong in the cold-booted VM.</summary>
    [JsonPropertyName("cold_boot_lost_writes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? ColdBootLostWrites { get; set; }

    /// <summary>From starting the cold VM until every key was read back, ms.</summary>
    [JsonPropertyName("cold_boot_ms")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? ColdBootMs { get; set; }

    /// <summary>Initial disk sync duration, ms.</summary>
    [JsonPropertyName("sync_ms")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? SyncMs { get; set; }

    /// <summary>Bytes copied by the initial disk sync (all-zero chunks skipped).</summary>
    [JsonPropertyName("sync_bytes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? SyncBytes { get; set; }
}
