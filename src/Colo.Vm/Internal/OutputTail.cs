using System.Text;

namespace Colo.Vm.Internal;

/// <summary>Bounded, thread-safe ring of the most recent output lines of a child process.</summary>
internal sealed class OutputTail(int maxLines, int maxLineChars)
{
    private readonly Queue<string> _lines = new();

    /// <summary>Appends one line, truncated to the per-line limit; drops the oldest line when full.</summary>
    public void Add(string line)
    {
        if (line.Length > maxLineChars)
        {
            line = line[..maxLineChars] + "…";
        }

        lock (_lines)
        {
            if (_lines.Count == maxLines)
            {
                _lines.Dequeue();
            }

            _lines.Enqueue(line);
        }
    }

    /// <summary>The retained lines joined by newlines (empty when none).</summary>
    public override string ToString()
    {
        lock (_lines)
        {
            StringBuilder sb = new();
            foreach (string l in _lines)
            {
                if (sb.Length > 0)
                {
                    sb.Append('\n');
                }

                sb.Append(l);
            }

            return sb.ToString();
        }
    }
}
