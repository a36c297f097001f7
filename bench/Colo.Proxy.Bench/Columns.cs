using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Colo.Proxy.Bench;

/// <summary>
/// A rate column derived from the mean time per operation: <c>perOp(case) × 10⁹ / mean ns</c>, printed in millions
/// (MB for bytes). <c>perOp</c> returns null where the column does not apply.
/// </summary>
/// <param name="name">Column header.</param>
/// <param name="legend">Legend line.</param>
/// <param name="perOp">Units per benchmark operation, or null.</param>
/// <param name="suffix">Printed after the value (in millions).</param>
public sealed class RateColumn(string name, string legend, Func<BenchmarkCase, double?> perOp, string suffix = " M") : IColumn
{
    /// <summary>Frames per second: 2 frames per operation (PVM+SVM pair, or SVM→client + client→SVM).</summary>
    public static readonly RateColumn Frames = new("Frames/s", "Frames per second on one core (2 frames per operation)", _ => 2);

    /// <summary>Matched payload bytes per second (what the client receives: one payload per PVM+SVM pair).</summary>
    public static readonly RateColumn PayloadBytes = new("Payload MB/s", "Matched TCP payload released to the client, 10^6 bytes per second",
        c => c.Descriptor.Type == typeof(MatchedTcpBenchmarks) ? PayloadOf(c) : null, "");

    /// <summary>The <c>Payload</c> parameter of a case.</summary>
    /// <param name="c">The case.</param>
    /// <returns>The value, or 0 when absent.</returns>
    public static int PayloadOf(BenchmarkCase c) =>
        c.Parameters.Items.FirstOrDefault(p => p.Name == "Payload")?.Value is int v ? v : 0;

    /// <inheritdoc/>
    public string Id => nameof(RateColumn) + "." + name;
    /// <inheritdoc/>
    public string ColumnName => name;
    /// <inheritdoc/>
    public bool AlwaysShow => true;
    /// <inheritdoc/>
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc/>
    public int PriorityInCategory => 0;
    /// <inheritdoc/>
    public bool IsNumeric => true;
    /// <inheritdoc/>
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc/>
    public string Legend => legend;

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, summary.Style);

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? units = perOp(benchmarkCase);
        var s = summary[benchmarkCase]?.ResultStatistics;
        if (units is null || s is null || s.Mean <= 0)
        {
            return "-";
        }
        double perSecond = units.Value * 1e9 / s.Mean;
        return (perSecond / 1e6).ToString("N2", System.Globalization.CultureInfo.InvariantCulture) + suffix;
    }

    /// <inheritdoc/>
    public bool IsAvailable(Summary summary) => true;

    /// <inheritdoc/>
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    /// <inheritdoc/>
    public override string ToString() => ColumnName;
}
