using System.Text.Json;
using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>
/// What <see cref="DiskWorkload"/> measured. Write <c>i</c> is <c>SET k&lt;i&gt; v&lt;i&gt;</c>, i = 1, 2, 3, ...
/// (one attempt each); every attempt ends up in exactly one of acked, unknown and rejected.
/// </summary>
public sealed class DiskWorkloadResult
{
    /// <summary>Most unknown ids kept in <see cref="UnknownIds"/> (the count stays exact).</summary>
    public const int MaxUnknownIdsKept = 1000;

    /// <summary>Writes attempted (the highest i sent).</summary>
    [JsonPropertyName("attempted")]
    public long Attempted { get; set; }

    /// <summary>Writes acknowledged with <c>+OK</c>.</summary>
    [JsonPropertyName("acked")]
    public long Acked { get; set; }

    /// <summary>The highest acknowledged i (0 when none).</summary>
    [JsonPropertyName("last_acked")]
    public long LastAcked { get; set; }

    /// <summary>Writes sent without a reply (timeout, connection lost): maybe applied, maybe not; never checked.</summary>
    [JsonPropertyName("unknown")]
    public long Unknown { get; set; }

    /// <summary>Writes answered with an error reply (not applied).</summary>
    [JsonPropertyName("rejected")]
    public long Rejected { get; set; }

    /// <summary>Connections opened after the first one.</summary>
    [JsonPropertyName("reconnects")]
    public long Reconnects { get; set; }

    /// <summary>Largest gap between consecutive acknowledgements, ms (loop start and end count as reference points).</summary>
    [JsonPropertyName("max_stall_ms")]
    public long MaxStallMs { get; set; }

    /// <summary>Every acknowledgement gap longer than the gap threshold, in time order.</summary>
    [JsonPropertyName("gaps")]
    public List<RedisGap> Gaps { get; set; } = [];

    /// <summary>The acknowledged ids as inclusive ranges <c>[first, last]</c>, ascending.</summary>
    [JsonPropertyName("acked_ranges")]
    public List<long[]> AckedRanges { get; set; } = [];

    /// <summary>The first <see cref="MaxUnknownIdsKept"/> unknown ids.</summary>
    [JsonPropertyName("unknown_ids")]
    public List<long> UnknownIds { get; set; } = [];

    /// <summary>The read-back of every acknowledged key after the loop (after the failover).</summary>
    [JsonPropertyName("verify")]
    public DiskVerifyResult Verify { get; set; } = new();

    /// <summary>Records an acknowledged id (ids must arrive in ascending order).</summary>
    public void RecordAcked(long id)
    {
        Acked++;
        LastAcked = id;
        if (AckedRanges.Count > 0 && AckedRanges[^1][1] == id - 1)
            AckedRanges[^1][1] = id;
        else
            AckedRanges.Add([id, id]);
    }

    /// <summary>Records a write that got no reply.</summary>
    public void RecordUnknown(long id)
    {
        Unknown++;
        if (UnknownIds.Count < MaxUnknownIdsKept)
            UnknownIds.Add(id);
    }

    /// <summary>Every acknowledged id, ascending (expanded from <see cref="AckedRanges"/>).</summary>
    public IReadOnlyList<long> AckedIds()
    {
        var ids = new List<long>((int)Math.Min(Acked, int.MaxValue));
        foreach (long[] r in AckedRanges)
        {
            for (long id = r[0]; id <= r[1]; id++)
                ids.Add(id);
        }
        return ids;
    }

    /// <summary>Serialises to indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, DemoJson.Options);

    /// <summary>Parses JSON written by <see cref="ToJson"/>.</summary>
    /// <exception cref="JsonException">Malformed JSON or the literal <c>null</c>.</exception>
    public static DiskWorkloadResult FromJson(string json) =>
        JsonSerializer.Deserialize<DiskWorkloadResult>(json, DemoJson.Options) ?? throw new JsonException("null disk workload result");
}

/// <summary>Outcome of reading keys <c>k&lt;i&gt;</c> back and comparing them with <c>v&lt;i&gt;</c>.</summary>
public sealed class DiskVerifyResult
{
    /// <summary>Most ids kept in <see cref="LostSample"/>.</summary>
    public const int MaxSample = 20;

    /// <summary>True when every key was read (each one either matched or counted as lost).</summary>
    [JsonPropertyName("complete")]
    public bool Complete { get; set; }

    /// <summary>Keys read back (matched or not).</summary>
    [JsonPropertyName("checked")]
    public long Checked { get; set; }

    /// <summary>Keys missing or holding a wrong value.</summary>
    [JsonPropertyName("lost")]
    public long Lost { get; set; }

    /// <summary>The first <see cref="MaxSample"/> lost ids.</summary>
    [JsonPropertyName("lost_sample")]
    public List<long> LostSample { get; set; } = [];

    /// <summary>Batches retried after a failure (timeout, connection lost, error reply).</summary>
    [JsonPropertyName("retries")]
    public int Retries { get; set; }

    /// <summary>Why the check is not complete; null when it is.</summary>
    [JsonPropertyName("error")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }
}
