using System.Text.Json;

namespace Colo.Vm;

/// <summary>An asynchronous QMP event such as <c>STOP</c>, <c>RESUME</c>, <c>MIGRATION</c>, <c>SHUTDOWN</c>.</summary>
/// <param name="Name">Event name (the <c>event</c> member).</param>
/// <param name="Data">The <c>data</c> member (an independent clone, safe to keep); <see cref="JsonValueKind.Undefined"/> when absent.</param>
/// <param name="Timestamp">QEMU's <c>timestamp</c> (seconds + microseconds, host wall clock); <see cref="DateTimeOffset.MinValue"/> when absent.</param>
public sealed record QmpEvent(string Name, JsonElement Data, DateTimeOffset Timestamp)
{
    /// <summary>Returns the string member <paramref name="property"/> of <see cref="Data"/>, or null when absent or not a string.</summary>
    /// <param name="property">Member name, e.g. <c>status</c> for <c>MIGRATION</c>.</param>
    public string? GetDataString(string property) =>
        Data.ValueKind == JsonValueKind.Object && Data.TryGetProperty(property, out JsonElement v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()
            : null;
}
